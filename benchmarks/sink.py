"""A local SMTP sink on 127.0.0.1 (aiosmtpd): accepts every mail, keeps only counts and sizes."""

from __future__ import annotations

import threading

from aiosmtpd.controller import Controller

from tools.odoo_tier import free_port


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.bytes = 0
        self.recipients = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages += 1
            self.bytes += len(envelope.original_content or envelope.content or b"")
            self.recipients += len(envelope.rcpt_tos)
        return "250 OK"


class SmtpSink:
    """``with SmtpSink() as sink: ... sink.port ... sink.messages``; no size limit (the 100 MB mail)."""

    def __init__(self) -> None:
        self._counter = _Counter()
        self._controller = Controller(
            self._counter, hostname="127.0.0.1", port=free_port(), server_kwargs={"data_size_limit": None}
        )

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def messages(self) -> int:
        with self._counter.lock:
            return self._counter.messages
