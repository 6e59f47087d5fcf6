# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Our own short transactions beside the mail's, under Odoo's REPEATABLE READ and concurrent workers."""

import threading

from psycopg2.errors import SerializationFailure

_sends = threading.local()

SERIALIZATION_ATTEMPTS = 5


def retry_serialization(work, before_retry=None, attempts=SERIALIZATION_ATTEMPTS):
    """Run ``work()``. When PostgreSQL refuses the snapshot because another worker changed a row we lock
    (token renewal, a log row's foreign key on the server row), call ``before_retry()`` (a new transaction)
    and run it again: the new snapshot sees the other worker's committed change."""
    for attempt in range(attempts):
        try:
            return work()
        except SerializationFailure:
            if attempt == attempts - 1:
                raise
            if before_retry is not None:
                before_retry()
    return None


def count_send():
    """Called by every ``ir.mail_server.send_email``: a mail leaves the building from this thread now."""
    _sends.count = getattr(_sends, "count", 0) + 1


def sends_so_far():
    """Mails this thread has handed to a mail server so far: compared before and after work that may send."""
    return getattr(_sends, "count", 0)


class KeptCursor:
    """One cursor of our own kept for a batch of short committed transactions (the log rows of every mail),
    instead of a cursor borrowed from the pool, set up and given back twice per mail."""

    def __init__(self, registry):
        self._registry = registry
        self._cr = None

    def run(self, work):
        """``work(cr)`` in a transaction of its own, committed; retried on a serialization failure."""

        def attempt():
            if self._cr is None:
                self._cr = self._registry.cursor()
            try:
                result = work(self._cr)
                self._cr.commit()
            except Exception:
                self._cr.rollback()
                raise
            return result

        return retry_serialization(attempt)

    def close(self):
        if self._cr is not None:
            self._cr.close()
            self._cr = None
