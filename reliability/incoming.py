"""Section "incoming": what comes back, read over Graph, under faults (issue #15).

Each kind delivers mail into the sending mailbox at the fake (customers' replies to a record's message, an
Exchange bounce, what the kind needs), lets Odoo's Graph inbox fetch it with the fault active, lifts the fault,
fetches again, and then counts by Message-ID: every reply must be on the record exactly once (lost: 0,
processed twice: 0), every message filed out of the Inbox, none deleted.
"""

from __future__ import annotations

import email.utils
from typing import Callable, Dict, List

from .report import Check, SectionResult
from .stack import SENDER, Stack

SECTION = "incoming"


class Incoming:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        odoo = stack.admin
        assert odoo is not None
        self.odoo = odoo
        self.inbox_id = odoo.call("mail.graph.inbox", "search", [("mail_server_id", "=", stack.server_id)])[0]
        self.record = odoo.call("res.partner", "create", {"name": "Incoming reliability record"})
        message_id = odoo.call("res.partner", "message_post", [self.record], body="<p>Quote</p>",
                               message_type="comment", subtype_xmlid="mail.mt_comment")  # fmt: skip
        self.parent = odoo.call("mail.message", "read", [message_id], ["message_id"])[0]["message_id"]
        self.senders = 0

    def reply(self, label: str) -> str:
        """Deliver a customer's reply to the record's message; its Message-ID. One sender per reply: Odoo's
        gateway drops a sender's 21st mail to one record within 2 hours as a loop (16.0+)."""
        message_id = email.utils.make_msgid(domain="fabrikam.example")
        self.senders += 1
        raw = (
            f"From: Customer {self.senders} <customer{self.senders}@fabrikam.example>\r\nTo: {SENDER}\r\nSubject: Re: Quote ({label})\r\n"
            f"Message-ID: {message_id}\r\nIn-Reply-To: {self.parent}\r\nReferences: {self.parent}\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\nContent-Type: text/plain\r\n\r\nAnswer {label}\r\n"
        )
        self.stack.fake.deliver(SENDER, raw.encode())
        return message_id

    def fetch(self) -> None:
        self.odoo.button("mail.graph.inbox", "action_fetch_now", self.inbox_id)

    def worker(self, **die) -> int:
        """A separate worker process fetching; returns its exit code (9: killed as asked)."""
        proc = self.stack.instance.spawn("reliability.odoo_jobs:fetch_inbox", inbox_id=self.inbox_id, **die)
        proc.communicate(timeout=300)
        return proc.returncode

    def counts(self, message_ids: List[str]) -> Dict[str, int]:
        found = self.odoo.call("mail.message", "search_read",
                               [("model", "=", "res.partner"), ("res_id", "=", self.record),
                                ("message_id", "in", message_ids)], ["message_id"])  # fmt: skip
        counts = {m: 0 for m in message_ids}
        for row in found:
            counts[row["message_id"]] += 1
        return counts

    def left_in_inbox(self) -> int:
        return len(self.stack.fake.mailbox_messages(SENDER, folder="Inbox"))


def _check(name: str, expected: str, run: Callable[[Incoming], tuple], incoming: Incoming) -> Check:
    try:
        message_ids, note = run(incoming)
    except Exception as exc:  # a crash of the scenario itself is a red row, not a crash of the suite
        return Check(SECTION, name, expected, f"crashed: {type(exc).__name__}: {exc}"[:200], False)
    finally:
        incoming.stack.fake.clear_faults()
    counts = incoming.counts(message_ids)
    lost = sum(1 for n in counts.values() if n == 0)
    twice = sum(1 for n in counts.values() if n > 1)
    left = incoming.left_in_inbox()
    ok = lost == 0 and twice == 0 and left == 0
    observed = f"{len(message_ids)} replies: lost {lost}, processed twice {twice}, left in Inbox {left}; {note}"
    check = Check(SECTION, name, expected, observed, ok)
    check.lost, check.twice = lost, twice  # type: ignore[attr-defined]
    return check


def delta_token_expired(incoming: Incoming) -> tuple:
    first = [incoming.reply(f"before {n}") for n in range(3)]
    incoming.fetch()
    later = [incoming.reply(f"after {n}") for n in range(2)]
    incoming.stack.fake.expire_delta_tokens()
    incoming.fetch()
    return first + later, "410 SyncStateNotFound answered, round restarted from the last message"


def throttled_mid_page(incoming: Incoming) -> tuple:
    ids = [incoming.reply(f"throttled {n}") for n in range(25)]
    fake = incoming.stack.fake
    fake.inject("delta", status=429, retry_after=0, code="ApplicationThrottled", skip=1)  # the round's 2nd page
    fake.inject("messageValue", status=429, retry_after=0, code="ApplicationThrottled", count=3, skip=5)
    fake.inject("moveMessage", status=503, retry_after=0, count=2, skip=3)
    incoming.fetch()
    incoming.fetch()
    return ids, "429 on a delta page and on batched reads, 503 on moves: retried"


def worker_killed_mid_batch(incoming: Incoming) -> tuple:
    ids = [incoming.reply(f"killed {n}") for n in range(12)]
    # Commit 1 files what an earlier fetch left; commit 2 is the batch's processing and outcome rows.
    before = incoming.worker(die_before_commit=2)  # Odoo's work on the batch is lost with the worker
    after = incoming.worker(die_after_commits=2)  # committed, not filed yet
    survivor = incoming.worker()
    return ids, f"worker exits {before}, {after} (killed before and after the batch's commit), then {survivor}"


def concurrent_update_mid_batch(incoming: Incoming) -> tuple:
    ids = [incoming.reply(f"refused {n}") for n in range(6)]
    refused = incoming.worker(refuse_snapshot_at=4)
    errors = sum(1 for m in incoming.stack.fake.mailbox_messages(SENDER) if m["folder"] == "Odoo Errors")
    survivor = incoming.worker()
    return (
        ids,
        f"snapshot refused at the 4th message: batch rolled back (exit {refused}), {errors} in errors; then {survivor}",
    )


def unparsable_message(incoming: Incoming) -> tuple:
    ids = [incoming.reply("before the garbage")]
    incoming.stack.fake.deliver(SENDER, b"\x00\xff\xfe this is not an RFC 5322 message \x00\r\n\r\n\xff")
    incoming.stack.fake.deliver(SENDER, b"From: nobody@nowhere.example\r\nSubject: for nobody\r\n\r\nno route\r\n")
    ids.append(incoming.reply("after the garbage"))
    incoming.fetch()
    errors = len(incoming.stack.fake.mailbox_messages(SENDER, folder="Odoo Errors"))
    return ids, f"{errors} message(s) filed in Odoo Errors with their reason"


def two_workers_at_once(incoming: Incoming) -> tuple:
    ids = [incoming.reply(f"raced {n}") for n in range(20)]
    procs = [
        incoming.stack.instance.spawn("reliability.odoo_jobs:fetch_inbox", log_name=f"incoming-race-{n}",
                                      inbox_id=incoming.inbox_id)
        for n in range(2)
    ]  # fmt: skip
    codes = [proc.wait(300) for proc in procs]
    return ids, f"two workers, exit codes {codes}"


KINDS = [
    ("delta token expired (410)", delta_token_expired),
    ("throttled mid-page and mid-batch", throttled_mid_page),
    ("worker killed mid-batch (after and before a commit)", worker_killed_mid_batch),
    ("concurrent update mid-batch (serialization failure)", concurrent_update_mid_batch),
    ("unparsable and unroutable messages", unparsable_message),
    ("two workers fetch the same inbox", two_workers_at_once),
]


def run_section(stack: Stack, progress: Callable[[str], None] = print) -> SectionResult:
    incoming = Incoming(stack)
    checks = []
    for name, run in KINDS:
        check = _check(name, "every reply on its record once, nothing left in the Inbox", run, incoming)
        progress(f"    {'ok ' if check.ok else 'RED'} {name}: {check.observed}")
        checks.append(check)
    figures = {
        "incoming_kinds": len(checks),
        "incoming_kinds_survived": sum(1 for c in checks if c.ok),
        "incoming_lost": sum(getattr(c, "lost", 0) for c in checks),
        "incoming_twice": sum(getattr(c, "twice", 0) for c in checks),
    }
    return SectionResult(checks, figures)
