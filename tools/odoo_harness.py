"""Drive a real Odoo from a script: a database with the addon, code run inside Odoo, workers, a server.

Shared by the reliability suite and the benchmarks. Odoo is found like the tests find it (tools/odoo_tier.py).

    odoo = OdooInstance("18.0", db="mga_bench")
    odoo.create_database()                          # fresh database, mail_graph_api installed, no demo data
    result = odoo.call("benchmarks.jobs:queue_mails", count=100)   # runs inside Odoo, returns JSON
    worker = odoo.spawn("benchmarks.jobs:drain_queue")              # same, as a background process
    odoo.drop_database()
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tools.odoo_exec import RESULT_MARKER
from tools.odoo_tier import REPO, addons_path, drop_database, ensure_core_installed, find_odoo


def graph_server_values(authority_url: str, graph_url: str, **overrides) -> dict:
    """ir.mail_server values for a Graph server against the fake Microsoft (its default app and mailbox)."""
    from fake_microsoft import DEFAULTS

    values = {
        "name": "Microsoft 365 (Graph)",
        "use_graph_api": True,
        "graph_client_id": DEFAULTS["client_id"],
        "graph_client_secret": DEFAULTS["client_secret"],
        "graph_tenant_id": DEFAULTS["tenant_id"],
        "graph_sender_email": DEFAULTS["signed_in_user"],
        "graph_cloud": "custom",
        "graph_authority_url": authority_url,
        "graph_api_url": graph_url,
    }
    values.update(overrides)
    return values


class OdooError(RuntimeError):
    pass


class OdooInstance:
    def __init__(self, series: str, db: str, logdir: Path | None = None):
        found = find_odoo(series)
        if not found:
            raise OdooError(f"no Odoo {series} (see tools/odoo_tier.py for where it is looked for)")
        self.series, self.db = series, db
        self.tree, self.python = found
        self.logdir = logdir or REPO / "var" / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.addons_path = addons_path(self.tree)
        ensure_core_installed(self.python)

    @property
    def env(self) -> dict:
        return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(self.tree)]))

    def command(self, *extra: str) -> list[str]:
        """odoo-bin for this database with this machine's PostgreSQL, loopback only."""
        return [
            str(self.python),
            str(self.tree / "odoo-bin"),
            "-d",
            self.db,
            "--db_host=127.0.0.1",
            "--db_user=root",
            f"--addons-path={self.addons_path}",
            "--http-interface=127.0.0.1",
            *extra,
        ]

    @property
    def without_demo(self) -> str:
        return "--without-demo" if self.series >= "19.0" else "--without-demo=all"  # 19.0: a plain flag

    def create_database(self, modules: str = "mail_graph_api", http_port: int = 0) -> None:
        self.drop_database()
        log = self.logdir / f"{self.db}-install.log"
        cmd = self.command("-i", modules, "--stop-after-init", self.without_demo, "--max-cron-threads=0")
        if http_port:
            cmd.append(f"--http-port={http_port}")
        else:
            cmd.append("--no-http")
        with log.open("w") as out:
            code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        if code != 0:
            raise OdooError(f"installing {modules} into {self.db} failed (exit {code}); see {log}")

    def drop_database(self) -> None:
        drop_database(self.db)

    def _exec_command(self, target: str, kwargs: dict, odoo_args: list[str]) -> list[str]:
        job = {
            "db": self.db,
            "addons_path": self.addons_path,
            "target": target,
            "kwargs": kwargs,
            "odoo_args": odoo_args,
        }
        return [str(self.python), str(REPO / "tools" / "odoo_exec.py"), json.dumps(job)]

    def spawn(self, target: str, log_name: str = "", odoo_args: list[str] = (), **kwargs) -> subprocess.Popen:
        """Run ``target(env, **kwargs)`` inside Odoo in a background process (stdout piped, stderr to a log)."""
        log = self.logdir / f"{self.db}-{log_name or target.replace(':', '-')}.log"
        return subprocess.Popen(
            self._exec_command(target, kwargs, list(odoo_args)),
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            env=self.env,
            text=True,
        )

    def call(self, target: str, timeout: float | None = None, odoo_args: list[str] = (), **kwargs):
        """Run ``target(env, **kwargs)`` inside Odoo, committed, and return its JSON result."""
        return result_of(self.spawn(target, odoo_args=odoo_args, **kwargs), target, timeout)


def result_of(proc: subprocess.Popen, what: str = "odoo_exec", timeout: float | None = None):
    out, _ = proc.communicate(timeout=timeout)
    for line in out.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    raise OdooError(f"{what} ended with exit {proc.returncode} and no result; stdout:\n{out[-2000:]}")


def probe(env) -> dict:
    """A target for the smoke check: what Odoo and which Graph servers the database has."""
    from odoo import release

    return {
        "odoo": release.version,
        "graph_servers": env["ir.mail_server"].search_count([("use_graph_api", "=", True)]),
    }


if __name__ == "__main__":  # smoke check: python -m tools.odoo_harness [series]
    instance = OdooInstance(sys.argv[1] if len(sys.argv) > 1 else "18.0", db=f"mga_harness_{os.getpid()}")
    instance.create_database()
    try:
        print(instance.call("tools.odoo_harness:probe"))
    finally:
        instance.drop_database()
