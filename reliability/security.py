"""Section 3: security. Against the running Odoo and its database:

- an internal user and a portal user cannot read the secret/token fields nor the Graph log model, by ORM
  (code run inside Odoo as that user), by JSON-RPC (/web/dataset/call_kw as that user's session) or by export
  (export_data, and the web client's /web/export/csv);
- the OAuth callback refuses a tampered state, a replayed one, another user's, another database's, an expired
  one, and a non-administrator; it redirects nowhere it was told to and escapes what Microsoft sends back;
- the server log of the whole run (and every worker's) holds none of the tokens, codes and secrets the fake
  issued or Odoo was given.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlencode

import requests

from .odoo_jobs import SECRET_FIELDS
from .report import Check, SectionResult
from .stack import CALLBACK_PATH, Stack, odoo_as

SECTION = "security"
USERS = [
    # An internal user allowed to export (a common setting): only the fields' own protection remains.
    {
        "login": "rel_clerk",
        "password": "rel-clerk-Pw-1",
        "group": "base.group_user,base.group_allow_export",
        "label": "internal user",
    },
    {"login": "rel_portal", "password": "rel-portal-Pw-1", "group": "base.group_portal", "label": "portal user"},
    {"login": "rel_admin2", "password": "rel-admin2-Pw-1", "group": "base.group_system", "label": "second admin"},
]
EVIL = "evil.example"


def foreign_states(stack: Stack) -> Dict[str, str]:
    """A state signed by a copy of this database (same secret, other name): another database's state."""
    copy = stack.copy_database("other")
    try:
        states = copy.call("reliability.odoo_jobs:make_states", server_id=1)
    finally:
        copy.drop_database()
        stack.extra_dbs.remove(copy.db)
    return {"other_db": states["fresh"], "other_db_name": states["db"]}


def _rpc(client, model: str, method: str, *args, **kwargs) -> Any:
    """(ok, result or error text)."""
    try:
        return True, client.call(model, method, *args, **kwargs)
    except Exception as error:
        return False, str(error)


def _csrf(client, url: str) -> Optional[str]:
    page = client.http.get(f"{url}/web", timeout=60)  # the web client (18.0+ redirects it to /odoo)
    found = re.search(r'csrf_token\s*:\s*"([0-9a-f]+o?[0-9]*)"', page.text)
    return found.group(1) if found else None


class Security:
    def __init__(self, stack: Stack, foreign: Dict[str, str]) -> None:
        self.stack = stack
        self.foreign = foreign
        self.result = SectionResult()
        self.secrets: List[str] = []

    def check(self, name: str, expected: str, observed: str, ok: bool) -> None:
        self.result.checks.append(Check(SECTION, name, expected, observed, ok))

    def leaked(self, text: str) -> List[str]:
        return [s for s in self.secrets if s and s in text]

    # -- access to secrets and logs ----------------------------------------------------------------

    def run(self) -> SectionResult:
        stack = self.stack
        assert stack.admin is not None
        values = stack.admin.call("ir.mail_server", "read", [stack.server_id], list(SECRET_FIELDS))[0]
        self.secrets = [str(values[f]) for f in SECRET_FIELDS if values.get(f)] + [
            v for vs in stack.issued_values().values() for v in vs
        ]
        stack.instance.call("reliability.odoo_jobs:create_users", users=USERS)
        self.orm()
        for spec in USERS[:2]:
            self.rpc(spec)
        self.oauth()
        return self.result

    def orm(self) -> None:
        logins = [spec["login"] for spec in USERS[:2]]
        labels = {spec["login"]: spec["label"] for spec in USERS}
        found = self.stack.instance.call(
            "reliability.odoo_jobs:orm_access", server_id=self.stack.server_id, logins=logins
        )
        for login, attempts in found.items():
            for attempt, outcome in attempts.items():
                refused = outcome.startswith("refused")
                harmless = attempt == "read all fields" and "no secret" in outcome
                self.check(
                    f"ORM, {labels[login]}: {attempt}",
                    "AccessError (or no secret in the answer)" if attempt == "read all fields" else "AccessError",
                    outcome,
                    refused or harmless,
                )

    def rpc(self, spec: Dict[str, str]) -> None:
        stack = self.stack
        label = spec["label"]
        client = odoo_as(stack.url, stack.db, spec["login"], spec["password"])
        sid = stack.server_id
        attempts: Dict[str, Callable[[], Any]] = {
            "read secret fields": lambda: [
                _rpc(client, "ir.mail_server", "read", [sid], [field]) for field in SECRET_FIELDS
            ],
            "search_read all fields": lambda: [_rpc(client, "ir.mail_server", "search_read", [])],
            "search by a secret (oracle)": lambda: [
                _rpc(client, "ir.mail_server", "search_count", [("graph_refresh_token", "!=", False)])
            ],
            "export_data secret fields": lambda: [
                _rpc(client, "ir.mail_server", "export_data", [sid], list(SECRET_FIELDS))
            ],
            "read the log model": lambda: [
                _rpc(client, "mail.graph.api.log", "search_read", [], ["message_id", "path"])
            ],
            "export_data the log model": lambda: [
                _rpc(client, "mail.graph.api.log", "export_data", [1], ["message_id", "path"])
            ],
        }
        for name, attempt in attempts.items():
            answers = attempt()
            allowed = [result for ok, result in answers if ok]
            leaks = self.leaked(json.dumps(allowed, default=str))
            if leaks:
                observed, ok = f"ALLOWED and LEAKED {len(leaks)} secret value(s)", False
            elif allowed and name not in ("search_read all fields",):
                observed, ok = f"ALLOWED: {json.dumps(allowed, default=str)[:120]}", False
            elif allowed:
                observed, ok = "allowed, no secret in the answer", True
            else:
                first = answers[0][1].splitlines()[0][:90] if answers else ""
                observed, ok = f"refused ({len(answers)} call(s)): {first}", True
            self.check(f"JSON-RPC, {label}: {name}", "refused (or no secret in the answer)", observed, ok)
        self.web_export(client, label)

    def web_export(self, client, label: str) -> None:
        """The web client's export button: /web/export/csv with the secret fields."""
        stack = self.stack
        token = _csrf(client, stack.url)
        if not hasattr(self, "_export_control"):
            # Control: the same request exports for an administrator, so a refusal below means something.
            self._export_control = True
            answer = self.export(
                stack.admin, _csrf(stack.admin, stack.url), "ir.mail_server", ["name"], [stack.server_id]
            )
            ok = answer.status_code == 200 and "Microsoft 365" in answer.text
            self.check(
                "web export, administrator (control)",
                "the server's name exported",
                f"HTTP {answer.status_code}: {answer.text[:60]!r}",
                ok,
            )
        for model, fields, ids in (
            ("ir.mail_server", list(SECRET_FIELDS), [stack.server_id]),
            ("mail.graph.api.log", ["message_id", "path", "message"], []),
        ):
            answer = self.export(client, token, model, fields, ids)
            leaks = self.leaked(answer.text)
            exported = answer.status_code == 200 and "text/csv" in answer.headers.get("Content-Type", "")
            rows = [line for line in answer.text.splitlines()[1:] if line.strip()] if exported else []
            if leaks:
                observed, ok = f"HTTP {answer.status_code}: LEAKED {len(leaks)} secret value(s)", False
            elif rows:
                observed, ok = f"HTTP {answer.status_code}: exported {len(rows)} row(s): {rows[0][:80]}", False
            else:
                observed, ok = (
                    f"HTTP {answer.status_code}, nothing exported" + ("" if token else " (no CSRF token)"),
                    True,
                )
            self.check(f"web export, {label}: {model}", "refused, no secret value in the answer", observed, ok)

    def export(self, client, token: Optional[str], model: str, fields: List[str], ids: List[int]) -> requests.Response:
        data = {
            "model": model,
            "fields": [{"name": f, "label": f} for f in fields],
            "ids": ids,
            "domain": [],
            "import_compat": False,
            "groupby": [],
        }
        form = {"data": json.dumps(data), "csrf_token": token or ""}
        if self.stack.series == "14.0":
            form["token"] = "0"  # 14.0's export also takes the download token its web client sends
        return client.http.post(f"{self.stack.url}/web/export/csv", data=form, timeout=60)

    # -- OAuth callback ------------------------------------------------------------------------------

    def callback(self, client, params: Dict[str, str]) -> requests.Response:
        return client.http.get(
            f"{self.stack.url}{CALLBACK_PATH}?{urlencode(params)}", allow_redirects=False, timeout=60
        )

    def refused(
        self,
        name: str,
        expected: str,
        answer: requests.Response,
        before: Dict[str, Any],
        tokens_before: int,
        words: List[str],
    ) -> None:
        stack = self.stack
        after = stack.read_server("graph_token_version", "graph_connection_state")
        token_calls = len([c for c in stack.fake.calls("token") if c["grant_type"] == "authorization_code"])
        text = re.sub(r"<[^>]+>", " ", answer.text)
        said = next((w for w in words if w.lower() in text.lower()), None)
        problems = []
        if answer.status_code not in (200, 403):
            problems.append(f"HTTP {answer.status_code}")
        if not said and answer.status_code != 403:
            problems.append(f"page does not say {' / '.join(words)!r}")
        if after["graph_token_version"] != before["graph_token_version"]:
            problems.append("tokens were stored")
        if token_calls != tokens_before:
            problems.append("a code was redeemed at Microsoft")
        observed = f"HTTP {answer.status_code}" + (f", page says {said!r}" if said else "")
        observed += ", nothing stored, no code redeemed" if not problems else " -- " + "; ".join(problems)
        self.check(f"OAuth callback: {name}", expected, observed, not problems)

    def snapshot(self) -> tuple:
        redeemed = [c for c in self.stack.fake.calls("token") if c["grant_type"] == "authorization_code"]
        return self.stack.read_server("graph_token_version", "graph_connection_state"), len(redeemed)

    def oauth(self) -> None:
        stack = self.stack
        admin = stack.admin
        states = stack.instance.call("reliability.odoo_jobs:make_states", server_id=stack.server_id)

        # Tampered: signature changed, then payload changed under the old signature.
        url = stack.start_auth()
        state = stack.state_of(url)
        body, signature = state.split(".", 1)
        forged_sig = body + "." + signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
        before, redeemed = self.snapshot()
        self.refused(
            "tampered signature",
            "refused, nothing stored",
            self.callback(admin, {"state": forged_sig, "code": "x"}),
            before,
            redeemed,
            ["altered", "signature"],
        )
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["sid"] = payload["sid"] + 1000
        forged_body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        self.refused(
            "tampered payload (old signature)",
            "refused, nothing stored",
            self.callback(admin, {"state": f"{forged_body}.{signature}", "code": "x"}),
            before,
            redeemed,
            ["altered", "signature"],
        )

        # Replay: a successful callback, then the same URL again.
        callback_url = stack.consent(stack.start_auth())
        first = admin.http.get(callback_url, allow_redirects=False, timeout=60)
        connected = stack.read_server()["graph_connection_state"] == "connected" and "Connected" in first.text
        before, redeemed = self.snapshot()
        second = admin.http.get(callback_url, allow_redirects=False, timeout=60)
        self.refused(
            "replayed callback",
            "first use connects, the replay is refused",
            second,
            before,
            redeemed,
            ["already used", "replaced"],
        )
        if not connected:
            self.check("OAuth callback: the genuine callback connects", "connected", f"HTTP {first.status_code}", False)

        # Another user's state (a second administrator started the sign-in).
        other = odoo_as(stack.url, stack.db, USERS[2]["login"], USERS[2]["password"])
        their_callback = stack.consent(stack.start_auth(other))
        before, redeemed = self.snapshot()
        answer = admin.http.get(their_callback, allow_redirects=False, timeout=60)
        self.refused("another user's state", "refused, nothing stored", answer, before, redeemed, ["another user"])

        # Another database's state, and an expired one.
        stack.start_auth()
        before, redeemed = self.snapshot()
        self.refused(
            f"another database's state ({self.foreign['other_db_name']})",
            "refused, nothing stored",
            self.callback(admin, {"state": self.foreign["other_db"], "code": "x"}),
            before,
            redeemed,
            ["another database"],
        )
        self.refused(
            "expired state",
            "refused, nothing stored",
            self.callback(admin, {"state": states["expired"], "code": "x"}),
            before,
            redeemed,
            ["expired"],
        )

        # A non-administrator reaching the callback with a valid state.
        clerk = odoo_as(stack.url, stack.db, USERS[0]["login"], USERS[0]["password"])
        admin_state = stack.state_of(stack.start_auth())
        before, redeemed = self.snapshot()
        self.refused(
            "internal user at the callback",
            "refused (403), nothing stored",
            self.callback(clerk, {"state": admin_state, "code": "x"}),
            before,
            redeemed,
            ["refused"],
        )

        # No open redirect: redirect-ish parameters, on a refused and on a successful callback.
        evil = {
            "redirect": f"https://{EVIL}/x",
            "next": f"https://{EVIL}/",
            "return_to": f"//{EVIL}",
            "redirect_uri": f"https://{EVIL}/cb",
            "back_url": f"https://{EVIL}/",
        }
        refused = self.callback(admin, {"state": "bogus.bogus", "code": "x", **evil})
        success = admin.http.get(
            stack.consent(stack.start_auth()) + "&" + urlencode(evil), allow_redirects=False, timeout=60
        )
        for label, answer in (("refused", refused), ("successful", success)):
            location = answer.headers.get("Location", "")
            links = re.findall(r'(?:href|action|src)\s*=\s*["\']([^"\']*)', answer.text)
            bad = [u for u in [location, *links] if EVIL in u]
            external_redirect = answer.status_code in (301, 302, 303, 307, 308) and not location.startswith(
                (stack.url, "/")
            )
            ok = not bad and not external_redirect and EVIL not in answer.text
            observed = f"HTTP {answer.status_code}" + (f", Location {location}" if location else "")
            observed += f", {len(links)} link(s), none to {EVIL}" if ok else f" -- points to {EVIL}: {bad[:2]}"
            self.check(f"OAuth callback: no open redirect ({label})", f"no redirect or link to {EVIL}", observed, ok)

        # What Microsoft sends back is escaped on the page.
        script = "<script>alert('mga')</script>"
        state = stack.state_of(stack.start_auth())
        answer = self.callback(admin, {"state": state, "error": "access_denied", "error_description": script})
        ok = script not in answer.text
        self.check(
            "OAuth callback: error_description escaped",
            "no raw <script> on the page",
            f"HTTP {answer.status_code}, " + ("escaped" if ok else "RAW SCRIPT ON THE PAGE"),
            ok,
        )
        # Leave the server connected for whatever runs next.
        stack.authenticate()


def run_section(stack: Stack, foreign: Dict[str, str]) -> SectionResult:
    return Security(stack, foreign).run()


def log_check(stack: Stack) -> Check:
    """Grep the whole run's Odoo logs (the server and every worker process) for every issued value."""
    issued = stack.issued_values()
    logs = sorted(p for p in stack.logdir.glob(f"{stack.db}*.log") if p.is_file())
    found: Dict[str, List[str]] = {}
    total = sum(len(v) for v in issued.values())
    for path in logs:
        text = path.read_text(errors="replace")
        for kind, values in issued.items():
            for value in values:
                at = text.find(value)
                if at >= 0:
                    line = text[text.rfind("\n", 0, at) + 1 : text.find("\n", at)]
                    logger = " ".join(line.split(" ")[4:6]) if line[:2] == "20" else line[:30]
                    found.setdefault(kind, []).append(f"{path.name} ({logger.strip()})")
    counts = ", ".join(f"{len(v)} {k}(s)" for k, v in issued.items())
    if found:
        where = "; ".join(f"{kind}: {len(places)}x, e.g. {places[0]}" for kind, places in found.items())
        observed = f"FOUND in the logs: {where}"
    else:
        observed = f"none of {total} values ({counts}) in {len(logs)} log file(s)"
    return Check(
        SECTION,
        "server and worker logs hold no token, code or secret",
        f"none of the issued values ({counts})",
        observed,
        not found and total > 0,
    )


def count(result: SectionResult) -> None:
    result.figures = {"security_checks": len(result.checks), "security_passed": sum(1 for c in result.checks if c.ok)}
