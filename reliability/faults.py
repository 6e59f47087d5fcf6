"""Section 1: the fault matrix. Each fault kind is queued through Odoo's real mail queue (``mail.mail`` +
``process_email_queue``) in a real Odoo process, against the fake Microsoft with the fault injected.

Per kind: the first queue run (fault active) must leave the expected state; then the fault is lifted, the
queue runs again (nothing may be resent), and an administrator's follow-up is played: Retry on every mail in
``exception``, as the failure reason tells, also on one Microsoft already has (the duplicate guard must find it
in Sent Items and not send it again); Send Again where the guard could not read Sent Items. In the end Microsoft
must hold every mail exactly once, counted by Message-ID.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from fake_microsoft.state import Fault
from tools.odoo_harness import graph_server_values

from .report import Check, SectionResult
from .stack import SENDER, Stack, free_port

MB = 1024 * 1024
SECTION = "faults"


def _noop(stack: Stack) -> None:
    return None


@dataclass
class Scenario:
    name: str
    expect: Tuple[str, ...]  # acceptable Odoo states after the first queue run
    reason: Tuple[str, ...] = ()  # what the failure reason must mention (any of, case-insensitive)
    inject: Callable[[Stack], None] = _noop
    recover: Callable[[Stack], None] = _noop
    attachment_mb: int = 0  # > 4 MB takes the draft + upload session path
    batch: int = 1
    runner: str = "rpc"  # "rpc" (the running Odoo server), "rollback", "kill" (worker processes)
    failure_type: Optional[str] = None
    extra: Optional[Callable[[Stack, Run], str]] = None  # "" when fine, else what is wrong
    describe: str = ""
    expected_text: str = ""  # replaces the generated "expected" wording
    decision: bool = False  # Retry must stop at the duplicate guard; the administrator then clicks Send Again
    cleanup: Callable[[Stack], None] = _noop  # after the row: put the stack back as the next rows expect it


@dataclass
class Run:
    mail_ids: List[int]
    message_ids: List[str]
    calls_from: int
    first: List[Dict[str, Any]] = field(default_factory=list)
    between: Dict[str, Any] = field(default_factory=dict)
    second: List[Dict[str, Any]] = field(default_factory=list)
    final: List[Dict[str, Any]] = field(default_factory=list)
    copies_first: List[int] = field(default_factory=list)
    copies_second: List[int] = field(default_factory=list)
    copies_final: List[int] = field(default_factory=list)
    admin: str = ""
    note: str = ""
    after_retry: List[Dict[str, Any]] = field(default_factory=list)
    copies_after_retry: List[int] = field(default_factory=list)

    def calls(self, stack: Stack, route: Optional[str] = None) -> List[Dict[str, Any]]:
        return [c for c in stack.fake.calls()[self.calls_from :] if route is None or c["route"] == route]

    def statuses(self, stack: Stack, route: str) -> List[Any]:
        return [c["status"] for c in self.calls(stack, route)]


# -- fault helpers ----------------------------------------------------------------------------------------


def inject(route: str, **fault: Any) -> Callable[[Stack], None]:
    return lambda stack: stack.fake.inject(route, **fault) and None


def write_server(**values: Any) -> Callable[[Stack], None]:
    return lambda stack: stack.write_server(values)


def both(*steps: Callable[[Stack], None]) -> Callable[[Stack], None]:
    def run(stack: Stack) -> None:
        for step in steps:
            step(stack)

    return run


def expire_tokens_at_second_send(stack: Stack) -> None:
    def hook(nth: int) -> Optional[Fault]:
        if nth == 2:
            stack.fake.state.expire_tokens()  # the token Odoo holds dies between mail 1 and mail 2
        return None

    stack.spy.on("sendMail", hook)


def expire_upload_session_at_second_chunk(stack: Stack) -> None:
    def hook(nth: int) -> Optional[Fault]:
        if nth == 2:
            with stack.fake.state.lock:
                for upload in stack.fake.state.uploads.values():
                    upload.expires_at = 0.0
        return None

    stack.spy.on("upload", hook)


def revoke(stack: Stack) -> None:
    stack.fake.revoke_refresh_tokens()
    stack.fake.expire_tokens()


def reauthenticate(stack: Stack) -> None:
    page = stack.authenticate()
    if page.status_code != 200:
        raise RuntimeError(f"re-authentication failed: HTTP {page.status_code}")


def expire_secret(stack: Stack) -> None:
    stack.fake.configure(client_secret_expired=True)
    stack.fake.expire_tokens()


def rotate_secret(stack: Stack) -> None:
    """The administrator creates a new secret in Entra ID and pastes it on the server."""
    new = f"rotated-secret-{int(time.time())}~Qx"
    stack.secrets.append(new)
    stack.fake.configure(client_secret=new, client_secret_expired=False)
    stack.write_server({"graph_client_secret": new})


POOL_MAILBOX = "sales@contoso.onmicrosoft.com"


def age_sends(stack: Stack) -> None:
    """As if two minutes passed: the mailbox's sends so far are older, the waiting mails' slots have come."""
    stack.sql("UPDATE mail_graph_api_log SET create_date = create_date - interval '2 minutes'")
    stack.sql(
        "UPDATE mail_mail SET scheduled_date = NULL WHERE state = 'outgoing' "
        "AND failure_reason LIKE '%Waiting for the sending quota%'"
    )


def spend_quota(stack: Stack) -> None:
    age_sends(stack)
    stack.write_server({"graph_rate_limit": 2})


def open_pool(stack: Stack) -> None:
    """A second mailbox in the server's pool (application mode: the app may send as it); ours takes 1 a minute."""
    age_sends(stack)
    stack.write_server({"graph_rate_limit": 1, "graph_pool": "reliability"})
    values = graph_server_values(
        stack.fake.url,
        stack.fake.graph_url,
        name="Pool member (fake, reliability)",
        graph_auth_mode="application_secret",
        graph_client_secret=stack.fake.config()["client_secret"],  # the current one: an earlier row rotates it
        graph_sender_email=POOL_MAILBOX,
        graph_pool="reliability",
        graph_rate_limit=0,
        graph_daily_recipient_limit=0,
        sequence=50,
    )
    stack.pool_member_id = stack.admin.call("ir.mail_server", "create", values)


def close_pool(stack: Stack) -> None:
    stack.admin.call("ir.mail_server", "write", [stack.pool_member_id], {"active": False})
    stack.write_server({"graph_rate_limit": 0, "graph_pool": False})


def mailboxes_of(run: Run, stack: Stack) -> List[str]:
    wanted = set(run.message_ids)
    return [m["mailbox"] for m in stack.fake.messages() if m["internet_message_id"] in wanted]


def held_back_then_sent(stack: Stack, run: Run) -> str:
    if sum(run.copies_first) != 2:
        return f"{sum(run.copies_first)} reached Microsoft in the first run, the limit is 2"
    return ""


def failed_over(stack: Stack, run: Run) -> str:
    mailboxes = sorted(mailboxes_of(run, stack))
    if mailboxes != sorted([SENDER, POOL_MAILBOX, POOL_MAILBOX]):
        return f"sent by {mailboxes}, expected 1 by {SENDER} and 2 by {POOL_MAILBOX}"
    rows = stack.admin.call(
        "mail.graph.api.log",
        "search_count",
        [("operation", "=", "mailbox_pool"), ("message_id", "in", run.message_ids)],
    )
    return "" if rows == 2 else f"{rows} pool rows in the Graph API Logs, expected 2"


def run_alerts(stack: Stack) -> None:
    """The scheduled action "Microsoft Graph: alerts", run now (as an administrator would from its form)."""
    cron = stack.admin.call(
        "ir.model.data", "search_read", [("module", "=", "mail_graph_api"), ("name", "=", "ir_cron_mail_graph_alerts")],
        ["res_id"],
    )[0]["res_id"]  # fmt: skip
    stack.admin.call("ir.cron", "method_direct_trigger", [cron])


def secret_past_its_date(stack: Stack) -> None:
    """The secret's end date (on the fake's clock) has passed; the server's form had the date."""
    yesterday = datetime.date.today() - datetime.timedelta(days=1)
    stack.fake.configure(client_secret_expires=time.time() - 60)
    stack.fake.expire_tokens()
    stack.write_server({"graph_secret_expiry": yesterday.isoformat()})
    run_alerts(stack)


def new_secret_with_its_date(stack: Stack) -> None:
    rotate_secret(stack)
    stack.fake.configure(client_secret_expires=None)
    stack.write_server({"graph_secret_expiry": (datetime.date.today() + datetime.timedelta(days=365)).isoformat()})
    run_alerts(stack)


def alert_raised_then_cleared(stack: Stack, run: Run) -> str:
    alerts = stack.admin.call(
        "mail.graph.alert", "search_read",
        [("kind", "=", "secret_expiry"), ("key", "=", "secret_expiry:expired"), ("active", "in", [True, False])],
        ["active", "cleared_date", "notified_by_email"],
    )  # fmt: skip
    if not alerts:
        return "no alert 'secret expired' was raised"
    if any(alert["active"] for alert in alerts):
        return "the alert did not clear after the new secret"
    return ""


def http_date(seconds: float) -> Callable[[Stack], None]:
    def run(stack: Stack) -> None:
        when = email.utils.formatdate(time.time() + seconds, usegmt=True)
        stack.fake.inject("sendMail", status=429, code="ApplicationThrottled", retry_after=when, count=1)

    return run


# -- extra checks ---------------------------------------------------------------------------------------


def expect_statuses(route: str, wanted: List[Any]) -> Callable[[Stack, Run], str]:
    def check(stack: Stack, run: Run) -> str:
        got = run.statuses(stack, route)
        return "" if got[: len(wanted)] == wanted else f"{route} statuses {got}, expected to start {wanted}"

    return check


def one_refresh_mid_batch(stack: Stack, run: Run) -> str:
    sends = run.statuses(stack, "sendMail")
    refreshes = [c for c in run.calls(stack, "token") if c["grant_type"] == "refresh_token"]
    problems = []
    if sends.count(401) != 1:
        problems.append(f"sendMail statuses {sends}")
    if len(refreshes) != 1:
        problems.append(f"{len(refreshes)} token refreshes")
    return "; ".join(problems)


def server_needs_reauth(stack: Stack, run: Run) -> str:
    state = run.between.get("graph_connection_state")
    return "" if state == "reauth" else f"server state {state!r}, expected 'reauth'"


def draft_path_after_413(stack: Stack, run: Run) -> str:
    routes = [c["route"] for c in run.calls(stack) if c["route"] in ("sendMail", "createDraft", "send")]
    return "" if routes[:3] == ["sendMail", "createDraft", "send"] else f"calls {routes}"


def resumed_upload(stack: Stack, run: Run) -> str:
    uploads = run.calls(stack, "upload")
    failed = [c for c in uploads if c["status"] == 500]
    polled = [c for c in uploads if c["method"] == "GET"]
    sizes = [
        a["size"]
        for m in stack.fake.messages()
        if m["internet_message_id"] in run.message_ids
        for a in m.get("attachments", [])
    ]
    problems = []
    if not failed or not polled:
        problems.append(f"no failed chunk + status poll seen ({[(c['method'], c['status']) for c in uploads]})")
    if sizes != [8 * MB]:
        problems.append(f"attachment sizes at Microsoft {sizes}")
    return "; ".join(problems)


def retry_awaits_decision(stack: Stack, run: Run) -> str:
    """Retry after an uncertain attempt, Sent Items unreadable: the guard must not send, and must say why."""
    problems = []
    if any(run.copies_after_retry):
        problems.append(f"Retry sent without a decision (at Microsoft {run.copies_after_retry})")
    for row in run.after_retry:
        reason = (row["failure_reason"] or "").lower()
        if row["state"] != "exception" or "sent items" not in reason or "send again" not in reason:
            problems.append(f"after Retry: {row['state']} {_short(row['failure_reason'] or '', 100)!r}")
    if not run.after_retry:
        problems.append("Retry was not reached")
    return "; ".join(problems)


def no_draft_left(stack: Stack, run: Run) -> str:
    with stack.fake.state.lock:
        left = [d.internet_message_id for d in stack.fake.state.drafts.values()]
    mine = [m for m in left if m in run.message_ids]
    deleted = [c for c in run.calls(stack, "deleteDraft") if c["status"] in (200, 204)]
    problems = []
    if mine:
        problems.append(f"{len(mine)} draft(s) left in the mailbox")
    if not deleted and run.first and run.first[0]["state"] != "sent":
        problems.append("no deleteDraft call")
    return "; ".join(problems)


# -- the matrix ----------------------------------------------------------------------------------------

NOTHING_SENT = ("nothing was sent", "could not reach")
AMBIGUOUS = ("may have accepted",)


def scenarios() -> List[Scenario]:
    closed_port = free_port()  # bound then released: nothing listens there
    restore_url = lambda stack: stack.write_server({"graph_api_url": stack.fake.graph_url})  # noqa: E731
    return [
        Scenario(
            "connection refused",
            ("outgoing",),
            NOTHING_SENT,
            inject=lambda s: s.write_server({"graph_api_url": f"http://127.0.0.1:{closed_port}/v1.0"}),
            recover=restore_url,
            describe="Graph URL on a closed port",
        ),
        Scenario(
            "DNS failure",
            ("outgoing",),
            NOTHING_SENT,
            inject=write_server(graph_api_url="https://graph.unresolvable-host.invalid/v1.0"),
            recover=restore_url,
            describe="Graph URL on an unresolvable host",
        ),
        Scenario(
            "read timeout before any answer",
            ("exception",),
            AMBIGUOUS,
            inject=inject("sendMail", action="delay", delay=5),
            describe="fake processes sendMail after 5 s, Odoo reads for 3 s",
        ),
        Scenario(
            "connection reset after the body",
            ("exception",),
            AMBIGUOUS,
            inject=inject("sendMail", action="close_after_processing"),
            describe="fake accepts the mail, then drops the connection",
        ),
        Scenario(
            "401 token expiry mid-batch",
            ("sent",),
            batch=3,
            inject=expire_tokens_at_second_send,
            extra=one_refresh_mid_batch,
            describe="tokens expire at the fake between mail 1 and mail 2 of one batch",
        ),
        Scenario(
            "refresh token revoked",
            ("exception",),
            ("authenticate with microsoft",),
            inject=revoke,
            recover=reauthenticate,
            failure_type="mail_smtp",
            extra=server_needs_reauth,
            describe="AADSTS50173 on refresh; the server must show Re-authentication needed; recovery: sign in again",
        ),
        Scenario(
            "client secret expired (AADSTS7000222)",
            ("exception",),
            ("7000222",),
            inject=expire_secret,
            recover=rotate_secret,
            failure_type="mail_smtp",
            describe="recovery: a new secret pasted on the server",
        ),
        Scenario(
            "client secret past its end date",
            ("exception",),
            ("7000222",),
            inject=secret_past_its_date,
            recover=new_secret_with_its_date,
            failure_type="mail_smtp",
            extra=alert_raised_then_cleared,
            describe="the fake's secret ends (its date, on the fake's clock); alerts run; then a new secret and date",
            expected_text="exception (AADSTS7000222, what to do); an alert 'secret expired' raised, cleared after "
            "the new secret; then exactly once at Microsoft",
        ),
        Scenario(
            "identity platform 503 during refresh",
            ("outgoing",),
            ("temporarily", "unavailable", "503"),
            inject=both(
                lambda s: s.fake.expire_tokens(),
                inject("token", status=503, error="temporarily_unavailable", retry_after="1", count=20),
            ),
            recover=lambda s: time.sleep(1.5),  # the outage ends (msal keeps a 503 for its Retry-After)
            describe="Entra ID answers 503 while the access token needs renewing: nothing was sent",
        ),
        Scenario(
            "403 ErrorSendAsDenied",
            ("exception",),
            ("ErrorSendAsDenied",),
            inject=inject("sendMail", status=403, code="ErrorSendAsDenied"),
            failure_type="mail_smtp",
        ),
        Scenario(
            "404 MailboxNotEnabledForRESTAPI",
            ("exception",),
            ("MailboxNotEnabledForRESTAPI",),
            inject=inject("sendMail", status=404, code="MailboxNotEnabledForRESTAPI"),
            failure_type="mail_smtp",
        ),
        Scenario(
            "400 ErrorInvalidRecipients",
            ("exception",),
            ("ErrorInvalidRecipients",),
            inject=inject("sendMail", status=400, code="ErrorInvalidRecipients"),
            failure_type="mail_email_invalid",
        ),
        Scenario(
            "413 request too large",
            ("sent",),
            attachment_mb=2,
            inject=inject("sendMail", status=413, code="RequestBodyTooLarge"),
            extra=draft_path_after_413,
            describe="2 MB attachment: under our 4 MB estimate, Graph says 413; the draft path must take it",
        ),
        Scenario(
            "429 Retry-After seconds",
            ("sent",),
            inject=inject("sendMail", status=429, code="ApplicationThrottled", retry_after="1"),
            extra=expect_statuses("sendMail", [429, 202]),
        ),
        Scenario(
            "429 Retry-After HTTP date",
            ("sent",),
            inject=http_date(2),
            extra=expect_statuses("sendMail", [429, 202]),
        ),
        Scenario(
            "429 persisting past the deadline",
            ("outgoing",),
            ("ApplicationThrottled", "throttl"),
            inject=both(
                write_server(graph_send_deadline=3),
                inject("sendMail", status=429, code="ApplicationThrottled", retry_after="2", count=50),
            ),
            recover=write_server(graph_send_deadline=30),
            describe="per-mail deadline 3 s, Retry-After 2 s, 50 times",
        ),
        Scenario("500", ("exception",), AMBIGUOUS, inject=inject("sendMail", status=500)),
        Scenario("502", ("exception",), AMBIGUOUS, inject=inject("sendMail", status=502)),
        Scenario(
            "503 with Retry-After",
            ("sent",),
            inject=inject("sendMail", status=503, code="ServiceUnavailable", retry_after="1"),
            extra=expect_statuses("sendMail", [503, 202]),
        ),
        Scenario("504", ("exception",), AMBIGUOUS, inject=inject("sendMail", status=504, code="GatewayTimeout")),
        Scenario(
            "Sent Items unreadable: administrator sends again",
            ("exception",),
            AMBIGUOUS,
            inject=inject("sendMail", status=500),
            recover=inject("sentItems", status=403, code="ErrorAccessDenied", count=20),
            decision=True,
            extra=retry_awaits_decision,
            describe="500 on sendMail; then Sent Items answer 403, so Retry cannot check",
            expected_text="exception (may have accepted); Retry stops at the duplicate guard (Sent Items cannot be "
            "read: check them, then Send Again) without sending; Send Again: exactly once at Microsoft",
        ),
        Scenario(
            "sending quota exhausted",
            ("sent", "outgoing"),
            ("sending quota",),
            batch=4,
            inject=spend_quota,
            recover=age_sends,
            cleanup=write_server(graph_rate_limit=0),
            extra=held_back_then_sent,
            describe="4 mails, 2 a minute: 2 wait queued (never sent late by Exchange), then the window passes",
            expected_text="2 sent, 2 outgoing (waiting for the sending quota, next slot named); after the window: "
            "exactly once at Microsoft",
        ),
        Scenario(
            "mailbox pool failover",
            ("sent",),
            batch=3,
            inject=open_pool,
            cleanup=close_pool,
            extra=failed_over,
            describe="our mailbox takes 1 a minute; a second mailbox in its pool takes the rest",
            expected_text="all sent in one run: 1 by our mailbox, 2 by the pool's other mailbox (logged), exactly "
            "once at Microsoft",
        ),
        Scenario(
            "upload chunk fails halfway (resumed)",
            ("sent",),
            attachment_mb=8,
            inject=inject("upload", status=500, code="InternalServerError", skip=1),  # chunk 1 passes
            extra=resumed_upload,
            describe="8 MB attachment, chunk 2 of 3 answers 500",
        ),
        Scenario(
            "upload session expired",
            ("sent", "outgoing"),
            ("upload", "expired", "not found"),
            attachment_mb=8,
            inject=expire_upload_session_at_second_chunk,
            extra=no_draft_left,
            describe="session expires after chunk 1; nothing was sent, so sent or left retryable",
        ),
        Scenario(
            "draft send fails (draft deleted)",
            ("exception",),
            ("ErrorAccessDenied",),
            attachment_mb=5,
            inject=inject("send", status=403, code="ErrorAccessDenied"),
            failure_type="mail_smtp",
            extra=no_draft_left,
        ),
        Scenario(
            "DB rollback after Graph accepted",
            ("outgoing",),
            runner="rollback",
            describe="send(), Graph answers 202, the transaction rolls back; then the queue runs",
            expected_text="the crash leaves it outgoing; the next queue run must not send it again: exactly once at "
            "Microsoft, Odoo sent",
        ),
        Scenario(
            "worker killed mid-send",
            ("outgoing",),
            runner="kill",
            inject=inject("sendMail", action="delay", delay=2),
            describe="SIGKILL while sendMail is in flight (body received); then the queue runs",
            expected_text="the crash leaves it outgoing; the next queue run must not send it again: exactly once at "
            "Microsoft, Odoo sent",
        ),
    ]


# -- running ---------------------------------------------------------------------------------------------


class Matrix:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.odoo = stack.admin
        self.attachments: Dict[int, int] = {}

    def attachment(self, mb: int) -> int:
        if mb not in self.attachments:
            size = mb * MB
            data = (b"reliability-" * (size // 12 + 1))[:size]
            self.attachments[mb] = self.odoo.call(
                "ir.attachment",
                "create",
                {"name": f"{mb}mb.bin", "datas": base64.b64encode(data).decode(), "mimetype": "application/pdf"},
            )
        return self.attachments[mb]

    def queue(self, scenario: Scenario) -> Tuple[List[int], List[str]]:
        return self.queue_plain(scenario.batch, scenario.name, scenario.attachment_mb)

    def queue_plain(self, count: int, label: str, attachment_mb: int = 0) -> Tuple[List[int], List[str]]:
        """``count`` mails in Odoo's queue (state outgoing): their ids and Message-IDs."""
        ids = []
        for index in range(count):
            values = {
                "subject": f"[reliability] {label} #{index + 1}",
                "body_html": "<p>Reliability suite mail.</p>",
                "email_from": f"Contoso <{SENDER}>",
                "email_to": "alice@fabrikam.example",
                "mail_server_id": self.stack.server_id,
                "auto_delete": False,
            }
            if attachment_mb:
                values["attachment_ids"] = [(6, 0, [self.attachment(attachment_mb)])]
            ids.append(self.odoo.call("mail.mail", "create", values))
        rows = self.states(ids)
        return ids, [row["message_id"] for row in rows]

    def states(self, ids: List[int]) -> List[Dict[str, Any]]:
        fields = ["state", "failure_reason", "message_id"]
        if self.stack.series != "14.0":
            fields.append("failure_type")  # 14.0's mail.mail has none (its notifications do)
        return self.odoo.call("mail.mail", "read", ids, fields)

    def process(self, ids: List[int]) -> None:
        self.odoo.call("mail.mail", "process_email_queue", ids)  # by position: 19.0 renamed it email_ids

    def copies(self, message_ids: List[str]) -> List[int]:
        self.stack.spy.settle()
        counts = Counter(m["internet_message_id"] for m in self.stack.fake.messages())
        return [counts[m] for m in message_ids]

    def first_run(self, scenario: Scenario, run: Run) -> None:
        instance = self.stack.instance
        if scenario.runner == "rpc":
            self.process(run.mail_ids)
        elif scenario.runner == "rollback":
            result = instance.call(
                "reliability.odoo_jobs:send_then_rollback", mail_ids=run.mail_ids, odoo_args=["--log-level=info"]
            )
            run.note = f"in the transaction: {'/'.join(result['inside_transaction'])}, rolled back"
        elif scenario.runner == "kill":
            arrived = self.stack.spy.event("sendMail")
            worker = instance.spawn(
                "reliability.odoo_jobs:drain",
                log_name="killed-worker",
                odoo_args=["--log-level=info"],
                mail_ids=run.mail_ids,
            )
            if arrived.wait(120):
                worker.kill()
                run.note = "worker SIGKILLed with sendMail in flight"
            else:
                run.note = "sendMail never arrived"
            worker.communicate(timeout=60)
        else:
            raise ValueError(scenario.runner)

    def run(self, scenario: Scenario) -> Tuple[Check, Run]:
        stack = self.stack
        stack.spy.clear()
        stack.fake.clear_faults()
        ids, message_ids = self.queue(scenario)
        run = Run(ids, message_ids, calls_from=len(stack.fake.calls()))
        scenario.inject(stack)
        self.first_run(scenario, run)
        run.copies_first = self.copies(message_ids)
        run.first = self.states(ids)
        run.between = stack.read_server()
        stack.fake.clear_faults()
        stack.spy.clear()
        scenario.recover(stack)
        # The queue runs again: nothing may be sent twice, what was left retryable goes out now.
        self.process(ids)
        run.copies_second = self.copies(message_ids)
        run.second = self.states(ids)
        # The administrator follows the failure reason and clicks Retry on every mail in exception, also on one
        # Microsoft does have: the duplicate guard must find it in Sent Items and not send it again.
        to_retry = [row["id"] for row in run.second if row["state"] == "exception"]
        found = sum(1 for row, n in zip(run.second, run.copies_second) if row["state"] == "exception" and n > 0)
        if to_retry:
            # Odoo's Retry button (14.0 has only mark_outgoing)
            retry = "mark_outgoing" if self.stack.series == "14.0" else "action_retry"
            self.odoo.call("mail.mail", retry, to_retry)
            self.process(to_retry)
            run.admin = "Retry, " + ("in Sent Items (guard must skip)" if found else "not in Sent Items")
            if scenario.decision:
                # The guard could not read Sent Items: it waits for an administrator, who looked (the fake's
                # record: not there) and clicks "Send Again (checked Sent Items)".
                run.copies_after_retry = self.copies(message_ids)
                run.after_retry = self.states(ids)
                again = [row["id"] for row in run.after_retry if row["state"] == "exception"]
                if again:
                    self.odoo.call("mail.mail", "action_graph_send_again", again)
                    self.process(again)
                    run.admin += " (stopped: Sent Items cannot be read); Send Again"
        run.copies_final = self.copies(message_ids)
        run.final = self.states(ids)
        check = self.judge(scenario, run)
        scenario.cleanup(stack)
        return check, run

    def judge(self, scenario: Scenario, run: Run) -> Check:
        stack = self.stack
        problems = []
        first_states = [row["state"] for row in run.first]
        if any(state not in scenario.expect for state in first_states):
            problems.append(f"first run left {'/'.join(first_states)}")
        for row in run.first:
            if row["state"] == "sent":
                continue
            reason = (row["failure_reason"] or "").lower()
            if scenario.reason and not any(word.lower() in reason for word in scenario.reason):
                problems.append(f"reason does not say {' or '.join(scenario.reason)!r}: {reason[:120]!r}")
            if (
                row["state"] == "exception"
                and scenario.failure_type
                and row.get("failure_type", scenario.failure_type) != scenario.failure_type
            ):
                problems.append(f"failure_type {row['failure_type']}, expected {scenario.failure_type}")
        if any(a != b for a, b in zip(run.copies_first, run.copies_second)) and "outgoing" not in first_states:
            problems.append(f"the queue re-run sent again ({run.copies_first} -> {run.copies_second})")
        for row, n in zip(run.final, run.copies_final):
            if row["state"] == "sent" and n == 0:
                problems.append("Odoo says sent, Microsoft has nothing")
            if row["state"] not in ("sent", "exception"):
                problems.append(f"left {row['state']} after recovery")
        # Lost: Odoo believes it went out (or the record is gone) and Microsoft does not have it. A mail still
        # in exception with its reason is not lost, but not delivered after recovery either: red as well.
        lost = sum(
            1 for row, n in zip(run.final, run.copies_final) if n == 0 and row["state"] not in ("exception", "outgoing")
        ) + (len(run.mail_ids) - len(run.final))
        undelivered = [row for row, n in zip(run.final, run.copies_final) if n == 0 and row["state"] == "exception"]
        duplicates = sum(max(0, n - 1) for n in run.copies_final)
        if lost:
            problems.append(f"{lost} lost")
        if undelivered:
            problems.append(
                f"not delivered after recovery + Retry: {_short(undelivered[0]['failure_reason'] or '', 120)}"
            )
        if duplicates:
            problems.append(f"{duplicates} duplicate(s) at Microsoft")
        if scenario.extra is not None:
            extra = scenario.extra(stack, run)
            if extra:
                problems.append(extra)
        first = "/".join(sorted(set(first_states)))
        reason = next((row["failure_reason"] for row in run.first if row["failure_reason"]), "") or ""
        observed = f"{first}" + (f" ({_short(reason)})" if reason and first != "sent" else "")
        observed += f"; rerun: {'/'.join(sorted({row['state'] for row in run.second}))}"
        if run.admin:
            observed += f"; admin: {run.admin}"
        observed += f"; final {'/'.join(sorted({row['state'] for row in run.final}))}"
        observed += f"; at Microsoft {run.copies_final}"
        if run.note:
            observed += f" [{run.note}]"
        if problems:
            observed += " -- " + "; ".join(problems)
        expected = " or ".join(scenario.expect) + (f" ({' / '.join(scenario.reason)})" if scenario.reason else "")
        expected = scenario.expected_text or expected + ", then exactly once at Microsoft"
        if scenario.describe:
            expected = f"[{scenario.describe}] " + expected
        check = Check(SECTION, scenario.name, expected, observed, ok=not problems)
        check.lost, check.duplicates = lost, duplicates  # type: ignore[attr-defined]
        return check


def _short(reason: str, width: int = 90) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= width else reason[: width - 3] + "..."


def run_section(
    stack: Stack, only: Optional[List[str]] = None, progress: Callable[[str], None] = print
) -> SectionResult:
    matrix = Matrix(stack)
    result = SectionResult()
    lost = duplicates = 0
    for scenario in scenarios():
        if only and not any(word.lower() in scenario.name.lower() for word in only):
            continue
        started = time.monotonic()
        try:
            check, _run = matrix.run(scenario)
        except Exception as error:  # a crash of the harness is a red row, not a crash of the suite
            check = Check(SECTION, scenario.name, "runs", f"suite error: {type(error).__name__}: {error}", False)
            check.lost, check.duplicates = 0, 0  # type: ignore[attr-defined]
        lost += check.lost  # type: ignore[attr-defined]
        duplicates += check.duplicates  # type: ignore[attr-defined]
        result.checks.append(check)
        progress(f"    {'ok ' if check.ok else 'RED'} {scenario.name} ({time.monotonic() - started:.1f} s)")
    # Every Message-ID the fake ever accepted, once more: nothing anywhere in the run went out twice.
    counts = Counter(m["internet_message_id"] for m in stack.fake.messages())
    result.figures = {
        "fault_kinds": len(result.checks),
        "fault_kinds_survived": sum(1 for c in result.checks if c.ok),
        "mails_lost": lost,
        "duplicates": max(duplicates, sum(n - 1 for n in counts.values() if n > 1)),
    }
    return result
