"""Run the addon's Odoo test tier against every Odoo series found on this machine.

Where Odoo is looked for, per series (14.0 to 19.0):
  1. $MAIL_GRAPH_ODOO_<series>      e.g. MAIL_GRAPH_ODOO_18_0=/path/to/odoo-18 (the folder holding odoo-bin)
     $MAIL_GRAPH_ODOO_<series>_PYTHON  its interpreter (default: <ODOO_ROOT>/venv-<series>/bin/python)
  2. $ODOO_ROOT/<series> with $ODOO_ROOT/venv-<series>   (ODOO_ROOT defaults to /opt/odoo)
  3. what ./dev demo set up when it found none (tools/odoo_setup.py: ~/.cache/mail_graph_api/odoo/<series>)
A series that is not found prints a loud "SKIPPED: no Odoo <series>" line; it never passes silently.
Series run side by side (--jobs, default 2: this machine's two cores); each prints its lines when it is done.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script (python tools/odoo_tier.py): tools.odoo_setup must import
    sys.path.insert(0, str(REPO))
SERIES = ("14.0", "15.0", "16.0", "17.0", "18.0", "19.0")
# Odoo's own mail tests that must keep passing with the addon installed (mail server, queue, gateway, replies).
ODOO_MAIL_TESTS = {
    "modules": "mail,test_mail",
    "tags": ",".join(
        ["/base:TestIrMailServer"]
        + [
            f"/test_mail:{name}"
            for name in (
                "TestMailMail",
                "TestMailMailServer",
                "TestMailMailRace",
                "TestMailgateway",
                "TestMailGatewayLoops",
                "TestMailGatewayReplies",
                "TestEmailParsing",
                "TestMailThreadCC",
            )
        ]
    ),
}


# 14.0/15.0 ship Incoming Mail Servers as the fetchmail module: with it, the bridge mail_graph_api_fetchmail
# installs itself and the incoming tests cover the "Microsoft Graph" server type there too.
ADDON_MODULES = {"14.0": "mail_graph_api,fetchmail", "15.0": "mail_graph_api,fetchmail"}


def find_odoo(series: str) -> tuple[Path, Path] | None:
    key = "MAIL_GRAPH_ODOO_" + series.replace(".", "_")
    root = Path(os.environ.get("ODOO_ROOT", "/opt/odoo"))
    tree = Path(os.environ.get(key, root / series))
    python = Path(os.environ.get(key + "_PYTHON", root / f"venv-{series}" / "bin" / "python"))
    try:
        if (tree / "odoo-bin").is_file() and python.is_file():
            return tree, python
    except OSError:  # another user's Odoo (a link into a home we may not read): not ours to use
        pass
    from tools.odoo_setup import cached_odoo  # what ./dev demo set up for a newcomer

    return cached_odoo(series)


def addons_path(tree: Path) -> str:
    paths = [tree / "addons", tree / "odoo" / "addons", REPO]
    # Nightly server trees (14.0-16.0 here) keep every addon under odoo/addons and an addons/ with a .gitignore.
    return ",".join(str(p) for p in paths if p == REPO or (p.is_dir() and any(p.glob("*/__manifest__.py"))))


def drop_database(name: str) -> None:
    """dropdb --if-exists, without PostgreSQL's NOTICE when there is none."""
    subprocess.call(["dropdb", "-h", "127.0.0.1", "-U", "root", "--if-exists", name], stderr=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd: list[str], log: Path, env: dict | None = None) -> int:
    with log.open("w") as out:
        return subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def ensure_core_installed(python: Path) -> None:
    """The addon imports graph_mail: install this repository (and msal, requests) into Odoo's environment."""
    probe = subprocess.call([str(python), "-c", "import graph_mail, msal"], stderr=subprocess.DEVNULL)
    if probe != 0:
        print(f"    installing graph_mail into {python.parent.parent} (pip install -e {REPO})", flush=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(REPO)], capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"pip install into Odoo's environment failed:\n{done.stdout}\n{done.stderr}")


SUMMARY = re.compile(r"(\d+) failed, (\d+) error\(s\) of (\d+) tests")


def odoo_run(series: str, tree: Path, python: Path, modules: str, tags: str, label: str, logdir: Path) -> tuple:
    db = f"mga_{label}_{series.replace('.', '_')}_{os.getpid()}"  # unique: parallel runs never share a database
    drop_database(db)
    log = logdir / f"{label}-{series}.log"
    # Odoo's runbot and the OCA's CI install demo data: the "_demo" runs do too.
    without_demo = [] if label.endswith("_demo") else ["--without-demo"] if series >= "19.0" else ["--without-demo=all"]
    cmd = [
        str(python),
        str(tree / "odoo-bin"),
        "-d",
        db,
        "--db_host=127.0.0.1",
        "--db_user=root",
        f"--addons-path={addons_path(tree)}",
        "-i",
        modules,
        "--test-enable",
        f"--test-tags={tags}",
        "--stop-after-init",
        f"--http-port={free_port()}",
        "--http-interface=127.0.0.1",
        "--log-level=test",
        "--max-cron-threads=0",
        *without_demo,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.time()
    code = run(cmd, log, env)
    text = log.read_text(errors="replace")
    failed = errors = total = 0
    for match in SUMMARY.finditer(text):
        failed += int(match.group(1))
        errors += int(match.group(2))
        total += int(match.group(3))
    # Errors outside tests (install failures, broken views) are failures too.
    bad_lines = [
        line for line in text.splitlines() if re.search(r" (ERROR|CRITICAL) ", line) and "odoo.tests" not in line
    ]
    drop_database(db)
    return code, total, failed + errors, bad_lines, time.time() - started, log


PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|error|errors)\b")


def process_run(series: str, logdir: Path) -> tuple:
    """tests_odoo/: what a test transaction cannot show (own cursors, two worker processes), in real processes."""
    log = logdir / f"process-{series}.log"
    started = time.time()
    env = dict(os.environ, MAIL_GRAPH_TEST_SERIES=series)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests_odoo")]
    code = run(cmd, log, env)
    text = log.read_text(errors="replace")
    counts = {"passed": 0, "failed": 0, "error": 0}
    last = text.strip().splitlines()[-1] if text.strip() else ""
    for number, word in PYTEST_COUNTS.findall(last):
        counts[word.rstrip("s") if word == "errors" else word] += int(number)
    bad = counts["failed"] + counts["error"]
    bad_lines = [] if code in (0, 1) else [f"pytest exited {code}: {last}"]  # 5: nothing collected
    return code, counts["passed"] + bad, bad, bad_lines, time.time() - started, log


def run_series(series: str, args, logdir: Path) -> tuple[list[str], int, int]:
    """One series' runs (addon, process, Odoo's own mail tests): its report lines, passed, failed."""
    found = find_odoo(series)
    if not found:
        line = (
            f"SKIPPED: no Odoo {series} (set MAIL_GRAPH_ODOO_{series.replace('.', '_')}, install it at "
            f"/opt/odoo/{series} with /opt/odoo/venv-{series}, or let `python -m tools.odoo_setup {series}` set it up)"
        )
        return [line], 0, 0
    tree, python = found
    ensure_core_installed(python)
    addon = ADDON_MODULES.get(series, "mail_graph_api")
    runs = [("addon", addon, args.tags), ("process", None, None)]
    if series in args.demo_data:
        runs.insert(1, ("addon_demo", addon, args.tags))
    if args.tags == "/mail_graph_api":
        # A mailing's bounce statistics, read back over Graph: needs mass_mailing, which the addon run lacks.
        runs.insert(1, ("mailing", "mail_graph_api,mass_mailing", "/mail_graph_api:TestGraphMailingBounces"))
    if args.odoo_mail_tests:
        runs.append(("odoo_mail", "mail_graph_api," + ODOO_MAIL_TESTS["modules"], ODOO_MAIL_TESTS["tags"]))
    lines, passed, failed = [], 0, 0
    for label, modules, tags in runs:
        if label == "process":
            code, total, bad, bad_lines, seconds, log = process_run(series, logdir)
        else:
            code, total, bad, bad_lines, seconds, log = odoo_run(series, tree, python, modules, tags, label, logdir)
        ok = code == 0 and bad == 0 and not bad_lines and total > 0
        passed += max(total - bad, 0)
        failed += bad if (ok or bad) else 1  # a run that broke without a test failing
        status = "ok" if ok else "FAILED"
        lines.append(
            f"odoo {series} {label}: {max(total - bad, 0)} passed, {bad} failed ({seconds:.0f} s) {status} log: {log}"
        )
        if not ok:
            if total == 0:
                lines.append(f"  no test ran: see {log}")
            lines.extend("  " + line[:300] for line in bad_lines[:20])
    return lines, passed, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", nargs="*", default=os.environ.get("MAIL_GRAPH_SERIES", " ".join(SERIES)).split())
    parser.add_argument("--odoo-mail-tests", action="store_true", help="also run Odoo's own mail tests")
    parser.add_argument("--tags", default="/mail_graph_api", help="test tags for the addon run")
    parser.add_argument(
        "--demo-data", nargs="*", default=[], metavar="SERIES", help="also run the addon's tests on a demo database"
    )
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAIL_GRAPH_TIER_JOBS", "2")))
    args = parser.parse_args()
    logdir = REPO / "var" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    passed_total = failed_total = 0
    if not shutil.which("chromium"):
        # Odoo would skip the browser tour without a browser: count it as a failure, never as a pass.
        print("FAILED: no chromium on PATH, the browser tour cannot run (apt-get install chromium chromium-driver)")
        failed_total += 1
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        futures = [pool.submit(run_series, series, args, logdir) for series in args.series]
        for future in futures:
            lines, passed, failed = future.result()
            print("\n".join(lines), flush=True)
            passed_total += passed
            failed_total += failed
    print(f"odoo tier: {passed_total} passed, {failed_total} failed")
    return 1 if failed_total else 0


if __name__ == "__main__":
    sys.exit(main())
