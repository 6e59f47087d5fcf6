# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Exchange Online's sending limits, kept by Odoo before Microsoft has to (issue #16).

Per mailbox (every Graph server sending as it): messages per minute and recipients per rolling 24 hours,
counted per recipient copy as Exchange counts them. Past the daily limit Exchange still answers 202 and then
bounces every further mail (5.1.90): a mail that would exceed a limit is therefore not sent; it stays queued
with the time of its next slot and goes out at a later queue run. No worker ever sleeps for it.

The count is the log rows of mails handed to Microsoft (``mail.graph.api.log``, written on their own cursor and
committed, so every worker sees every other worker's sends), including the "pending" row of a mail being sent.
Check and pending row are one transaction under a per-mailbox advisory lock: two workers cannot both take the
last slot.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import List, Optional, Tuple

from graph_mail import GraphMailError

MINUTE = datetime.timedelta(minutes=1)
DAY = datetime.timedelta(hours=24)
QUOTA_LOCK = 7_356_002  # advisory lock key space: one lock per mailbox

_SENDS_WHERE = """
  FROM mail_graph_api_log l
  JOIN ir_mail_server s ON s.id = l.mail_server_id
 WHERE lower(s.graph_sender_email) = lower(%(mailbox)s)
   AND l.operation IN %(sending)s
   AND l.outcome IN ('ok', 'ambiguous', 'pending')
   AND l.create_date > (now() AT TIME ZONE 'UTC') - interval '24 hours'
"""
SENDS_OF_MAILBOX = "SELECT l.create_date, COALESCE(l.recipients, 0)" + _SENDS_WHERE + " ORDER BY l.create_date"
# What every send asks first: one aggregate row (the rows themselves only when a limit is reached).
TOTALS_OF_MAILBOX = (
    "SELECT count(*) FILTER (WHERE l.create_date > (now() AT TIME ZONE 'UTC') - interval '1 minute'), "
    "COALESCE(sum(l.recipients), 0)" + _SENDS_WHERE
)


class QuotaWait(GraphMailError):
    """The mailbox's sending limits leave no room for this mail now: it waits for ``next_slot`` (UTC), which
    becomes the mail's scheduled date, so queue runs before it do not even build the mail."""

    default_hint = "Odoo sends it at a later queue run; raise the limits on the server only if Exchange allows it."

    def __init__(self, mailbox: str, next_slot: datetime.datetime, per_minute: int, per_day: int) -> None:
        super().__init__(
            f"Waiting for the sending quota of {mailbox}: next slot at {next_slot:%Y-%m-%d %H:%M} UTC "
            f"(limits: {per_minute or 'no limit'} mails a minute, {per_day or 'no limit'} recipients a day)",
            code="MailboxQuota",
            nothing_sent=True,
            retryable=True,
        )
        self.mailbox, self.next_slot, self.per_minute, self.per_day = mailbox, next_slot, per_minute, per_day

    def later(self, minutes: int) -> QuotaWait:
        """The same wait, ``minutes`` later: the place of the n-th mail deferred in one queue run."""
        return QuotaWait(self.mailbox, self.next_slot + minutes * MINUTE, self.per_minute, self.per_day)


@dataclass
class Usage:
    messages_last_minute: int
    recipients_last_day: int


def sends(cr, mailbox: str, sending_operations: Tuple[str, ...]) -> List[Tuple[datetime.datetime, int]]:
    cr.execute(SENDS_OF_MAILBOX, {"mailbox": mailbox, "sending": sending_operations})
    return list(cr.fetchall())


def usage(cr, mailbox: str, sending_operations: Tuple[str, ...]) -> Usage:
    """The mailbox's use now: one aggregate row (what every send asks first, and what the form shows)."""
    cr.execute(TOTALS_OF_MAILBOX, {"mailbox": mailbox, "sending": sending_operations})
    last_minute, last_day = cr.fetchone()
    return Usage(messages_last_minute=last_minute, recipients_last_day=last_day)


def next_slot(
    rows, now: datetime.datetime, recipients: int, per_minute: int, per_day: int
) -> Optional[datetime.datetime]:
    """None when a mail to ``recipients`` may go now, else the earliest moment it may (UTC)."""
    waits = []
    minute = [when for when, _ in rows if when > now - MINUTE]
    if per_minute and len(minute) >= per_minute:
        waits.append(minute[len(minute) - per_minute] + MINUTE)  # when enough of the last minute's sends age out
    if per_day:
        used = sum(count for _, count in rows)
        excess = used + recipients - per_day
        if excess > 0:
            if recipients > per_day:
                return now + DAY  # never fits a day: refused by the caller's message, retried daily
            freed = 0
            for when, count in rows:
                freed += count
                if freed >= excess:
                    waits.append(when + DAY)
                    break
    return max(waits) if waits else None


def take_slot(cr, mailbox: str, sending_operations, recipients: int, per_minute: int, per_day: int, now=None):
    """Under the mailbox's lock (this transaction): raise :class:`QuotaWait` when there is no room."""
    if not per_minute and not per_day:
        return
    cr.execute("SELECT pg_advisory_xact_lock(%s, hashtext(lower(%s)))", (QUOTA_LOCK, mailbox))
    used = usage(cr, mailbox, sending_operations)
    minute_ok = not per_minute or used.messages_last_minute < per_minute
    if minute_ok and (not per_day or used.recipients_last_day + recipients <= per_day):
        return
    now = now or _utcnow(cr)
    slot = next_slot(sends(cr, mailbox, sending_operations), now, recipients, per_minute, per_day)
    if slot is not None:
        raise QuotaWait(mailbox, slot, per_minute, per_day)


def _utcnow(cr) -> datetime.datetime:
    cr.execute("SELECT now() AT TIME ZONE 'UTC'")
    return cr.fetchone()[0]
