"""Section 4 (issue item 3, a first part): Odoo worker processes at the same time, against the fake.

- parallel token renewal: several workers find the access token expired at once; the row lock in tokens.py
  must give exactly one refresh, every mail goes out once, and the refresh token kept in the database is the
  newest of its rotation chain (a rotated token is never lost);
- two workers draining the same queue: each mail must go out once;
- the load run: two workers drain N mails of one mailbox (default 100, ``--load 1000`` for the long run) from
  opposite ends of the queue, with the access token expiring halfway. Every mail must be at Microsoft exactly
  once (by Message-ID), at most 2 token refreshes, and never more than 4 Graph requests in flight for the
  mailbox at once (Microsoft's limit, MailboxConcurrency), as counted by the FakeSpy at the fake.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from fake_microsoft.state import Fault
from tools.odoo_harness import result_of

from .faults import Matrix
from .report import Check, SectionResult
from .stack import SENDER, Stack

SECTION = "concurrency"
STARTUP = 10.0  # seconds for the worker processes to load Odoo before they start together
LOAD_DEFAULT = 100  # mails of the load run in the default suite; --load N for a long one
MAILBOX_CONCURRENCY = 4  # Microsoft Graph: at most 4 concurrent requests per mailbox
MAX_REFRESHES = 2  # the token expiry halfway: one renewal, at most one more for the stored expiry


def _spawn_lined_up(stack: Stack, job: str, label: str, per_worker: List[Dict[str, Any]]) -> Tuple[list, float]:
    """One Odoo process per ``per_worker`` kwargs running ``job``, lined up to begin together once Odoo is
    loaded: the processes and the time they start at."""
    start_at = time.time() + STARTUP
    procs = [
        stack.instance.spawn(
            f"reliability.odoo_jobs:{job}",
            log_name=f"{label}-{i}",
            odoo_args=["--log-level=info"],
            start_at=start_at,
            **kwargs,
        )
        for i, kwargs in enumerate(per_worker)
    ]
    return procs, start_at


def _workers(stack: Stack, groups: List[List[int]], label: str) -> List[str]:
    """Start one drain worker per group, lined up; wait for all; what each ended with."""
    procs, _ = _spawn_lined_up(stack, "drain", label, [{"mail_ids": ids} for ids in groups])
    outcomes = []
    for proc in procs:
        try:
            result_of(proc, "drain", timeout=300)
            outcomes.append("ok")
        except Exception as error:  # a worker aborted (e.g. a serialization failure) is an outcome, not a crash
            outcomes.append(f"aborted ({str(error).splitlines()[0][:60]})")
    return outcomes


def parallel_renewal(stack: Stack, matrix: Matrix, workers: int = 3, per_worker: int = 2) -> Check:
    groups = []
    message_ids: List[str] = []
    for _ in range(workers):
        ids, mids = matrix.queue_plain(per_worker, "parallel renewal")
        groups.append(ids)
        message_ids += mids
    before = len(stack.fake.calls("token"))
    stack.fake.expire_tokens()  # every worker's first call gets a 401
    outcomes = _workers(stack, groups, "renewal")
    copies = matrix.copies(message_ids)
    refreshes = [c for c in stack.fake.calls("token")[before:] if c["grant_type"] == "refresh_token"]
    stored = stack.admin.call("ir.mail_server", "read", [stack.server_id], ["graph_refresh_token"])[0]
    with stack.fake.state.lock:
        record = stack.fake.state.refresh_tokens.get(stored["graph_refresh_token"] or "")
        newest = record is not None and not record.rotated_to and not record.revoked
    problems = []
    if len(refreshes) != 1:
        problems.append(f"{len(refreshes)} refreshes")
    if any(n != 1 for n in copies):
        problems.append(f"copies at Microsoft {copies}")
    if not newest:
        problems.append("the stored refresh token is not the newest of its chain")
    observed = (
        f"{workers} workers ({', '.join(outcomes)}): {len(refreshes)} refresh, copies {copies}, stored refresh "
        f"token {'is the newest' if newest else 'is NOT the newest'}"
    )
    check = Check(
        SECTION,
        f"parallel token renewal ({workers} workers)",
        "one refresh, every mail once, newest refresh token stored",
        observed + (" -- " + "; ".join(problems) if problems else ""),
        not problems,
    )
    check.duplicates = sum(max(0, n - 1) for n in copies)  # type: ignore[attr-defined]
    return check


def same_queue(stack: Stack, matrix: Matrix, workers: int = 2, mails: int = 20) -> Check:
    ids, message_ids = matrix.queue_plain(mails, "same queue")
    outcomes = _workers(stack, [ids] * workers, "same-queue")
    matrix.process(ids)  # whatever an aborted worker left outgoing goes out now
    copies = matrix.copies(message_ids)
    states = Counter(row["state"] for row in matrix.states(ids))
    duplicates = sum(max(0, n - 1) for n in copies)
    problems = []
    if duplicates:
        problems.append(f"{duplicates} duplicate(s) at Microsoft")
    if any(n == 0 for n in copies):
        problems.append(f"{sum(1 for n in copies if n == 0)} not at Microsoft")
    if set(states) != {"sent"}:
        problems.append(f"states {dict(states)}")
    observed = f"{workers} workers ({', '.join(outcomes)}): copies {dict(Counter(copies))}, states {dict(states)}"
    check = Check(
        SECTION,
        f"{workers} workers drain the same {mails} mails",
        "every mail once at Microsoft, all sent",
        observed + (" -- " + "; ".join(problems) if problems else ""),
        not problems,
    )
    check.duplicates = duplicates  # type: ignore[attr-defined]
    return check


def queue_bulk(stack: Stack, count: int, label: str) -> List[int]:
    """``count`` outgoing mails for the one mailbox, created in one call (mail.mail's create is batched)."""
    values = [
        {
            "subject": f"[reliability] {label} #{index + 1}",
            "body_html": f"<p>Load run mail {index + 1} of {count}.</p>",
            "email_from": f"Contoso <{SENDER}>",
            "email_to": f"load{index % 7}@fabrikam.example",
            "mail_server_id": stack.server_id,
            "auto_delete": False,
        }
        for index in range(count)
    ]
    ids = stack.admin.call("mail.mail", "create", values)
    return ids if isinstance(ids, list) else [ids]


def load_run(stack: Stack, matrix: Matrix, mails: int = LOAD_DEFAULT, workers: int = 2) -> Check:
    ids = queue_bulk(stack, mails, f"load {mails}")
    message_ids = [row["message_id"] for row in matrix.states(ids)]
    token_calls = len(stack.fake.calls("token"))
    sends_before = len(stack.fake.calls("sendMail"))
    halfway = max(1, mails // 2)
    expired: Dict[str, Any] = {}

    def expire_halfway(nth: int) -> Optional[Fault]:
        if nth == halfway:
            # Partway through: the stored expiry is in the past (a worker without the token in memory renews
            # on its own) and Microsoft rejects every token issued so far (401 for the ones in memory).
            stack.sql(
                "UPDATE ir_mail_server SET graph_access_token_expiry = (now() at time zone 'utc') - interval "
                f"'1 hour' WHERE id = {int(stack.server_id)}"
            )
            stack.fake.state.expire_tokens()
            expired["at"] = nth
        return None

    stack.spy.on("sendMail", expire_halfway)
    stack.spy.reset_peaks()
    timeout = 300 + mails
    procs, start_at = _spawn_lined_up(
        stack,
        "drain_until_empty",
        "load",
        [{"mail_ids": ids, "descending": bool(i % 2), "deadline": timeout - 60} for i in range(workers)],
    )
    outcomes = []
    for proc in procs:
        try:
            outcomes.append(result_of(proc, "drain_until_empty", timeout=timeout))
        except Exception as error:
            outcomes.append({"error": str(error).splitlines()[0][:80]})
    elapsed = max(0.1, time.time() - start_at)
    stack.spy.clear()
    peaks = stack.spy.peaks()
    copies = matrix.copies(message_ids)
    final = matrix.states(ids)
    states = Counter(row["state"] for row in final)
    refreshes = [c for c in stack.fake.calls("token")[token_calls:] if c["grant_type"] == "refresh_token"]
    rejected = sum(1 for c in stack.fake.calls("sendMail")[sends_before:] if c["status"] == 401)
    lost = sum(1 for n in copies if n == 0) + (len(ids) - len(final))
    duplicates = sum(max(0, n - 1) for n in copies)
    peak = max(peaks.values() or [0])
    problems = []
    if lost:
        problems.append(f"{lost} not at Microsoft")
    if duplicates:
        problems.append(f"{duplicates} duplicate(s) at Microsoft")
    if set(states) != {"sent"}:
        problems.append(f"states {dict(states)}")
    if "at" not in expired:
        problems.append("the token expiry never happened")
    if len(refreshes) > MAX_REFRESHES:
        problems.append(f"{len(refreshes)} token refreshes")
    if peak > MAILBOX_CONCURRENCY:
        problems.append(f"{peak} Graph requests in flight for one mailbox")
    if peak == 0:
        problems.append("no Graph request counted at the fake")
    errors = [o["error"] for o in outcomes if "error" in o]
    if errors:
        problems.append(f"worker failed: {errors[0]}")
    workers_text = ", ".join(
        f"{o['aborted']} aborted transactions in {o['rounds']} rounds" if "error" not in o else "failed"
        for o in outcomes
    )
    observed = (
        f"{mails} mails in {elapsed:.0f} s ({mails / elapsed:.0f}/s); workers: {workers_text}; at Microsoft "
        f"copies {dict(Counter(copies))}, lost {lost}, duplicates {duplicates}; states {dict(states)}; tokens "
        f"expired at send {expired.get('at', '-')}: {rejected} sendMail 401, {len(refreshes)} refresh(es); "
        f"peak in flight per mailbox {peaks or '{}'}"
    )
    check = Check(
        SECTION,
        f"load: {workers} workers drain {mails} mails of one mailbox, token expiry halfway",
        f"every mail once at Microsoft (lost 0, duplicates 0), all sent; <= {MAX_REFRESHES} token refreshes; "
        f"<= {MAILBOX_CONCURRENCY} Graph requests in flight per mailbox",
        observed + (" -- " + "; ".join(problems) if problems else ""),
        not problems,
    )
    check.duplicates, check.lost = duplicates, lost  # type: ignore[attr-defined]
    check.figures = {  # type: ignore[attr-defined]
        "load_mails": mails,
        "load_max_in_flight": peak,
        "load_token_refreshes": len(refreshes),
    }
    return check


def run_section(stack: Stack, progress: Callable[[str], None] = print, load: int = LOAD_DEFAULT) -> SectionResult:
    matrix = Matrix(stack)
    result = SectionResult()
    stack.spy.clear()
    stack.fake.clear_faults()
    tests = [
        ("parallel token renewal", parallel_renewal),
        ("same queue", same_queue),
        ("load run", lambda stack, matrix: load_run(stack, matrix, mails=load)),
    ]
    extra: Dict[str, int] = {}
    for name, test in tests:
        started = time.monotonic()
        try:
            check = test(stack, matrix)
        except Exception as error:
            check = Check(SECTION, name, "runs", f"suite error: {type(error).__name__}: {error}", False)
            check.duplicates = 0  # type: ignore[attr-defined]
        result.checks.append(check)
        extra.update(getattr(check, "figures", {}))
        progress(f"    {'ok ' if check.ok else 'RED'} {check.name} ({time.monotonic() - started:.1f} s)")
    figures: Dict[str, int] = {
        "concurrency_checks": len(result.checks),
        "concurrency_passed": sum(1 for c in result.checks if c.ok),
        "mails_lost": sum(getattr(c, "lost", 0) for c in result.checks),
        "duplicates": sum(getattr(c, "duplicates", 0) for c in result.checks),
        **extra,
    }
    result.figures = figures
    return result
