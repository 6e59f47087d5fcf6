"""HTTP transport: one pooled session per process, explicit timeouts, failure classification.

The one question that matters for a mail is which side of the request body a failure happened on:

- before the body left (connection refused, DNS, TLS handshake, connect timeout): ``nothing_sent=True``,
  safe to retry;
- after (read timeout, connection reset or closed before the answer, broken response): the request may have
  been processed, ``may_have_been_sent=True``, never resent blindly.

urllib3's own retries are off (``max_retries=0``): a silent resend would defeat that distinction.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from .errors import TransportError

_log = logging.getLogger(__name__)

USER_AGENT = "graph_mail/0.1 (+python-requests)"


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``read`` is the longest silence tolerated while waiting for an answer; ``total`` bounds a
    whole mail (all its calls, retries and waits); ``token`` bounds each token-endpoint call."""

    connect: float = 10.0
    read: float = 60.0
    total: float = 300.0
    token: float = 30.0


_session: Optional[requests.Session] = None
_session_lock = threading.Lock()


class _OwnHeadersOnly(AuthBase):
    """Our Authorization header is the only one: requests would otherwise look for a ``.netrc`` entry on every
    request and, finding one for the host, replace the Bearer token with Basic credentials."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


class _Session(requests.Session):
    """A worker's environment (proxies, CA bundle) does not change while it runs: requests reads it on every
    request, this session once per scheme and host (a measurable share of the CPU of a small Graph call)."""

    def __init__(self) -> None:
        super().__init__()
        self.auth = _OwnHeadersOnly()
        self._environment: Dict[Tuple[str, str], Dict[str, Any]] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[override]
        if proxies or stream is not None or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        settings = self._environment.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment[key] = settings
        return dict(settings, proxies=dict(settings["proxies"]))


def _new_session() -> requests.Session:
    session = _Session()
    # Pool sized for a worker pool sending in parallel; no transparent retries (see module doc).
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def get_session() -> requests.Session:
    """The process-wide pooled session, created on first use."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                _session = _new_session()
    return _session


def set_session(session: Optional[requests.Session]) -> None:
    """Replace the process-wide session (tests, proxies, custom CA bundles); ``None`` resets it."""
    global _session
    with _session_lock:
        _session = session


def new_request_id() -> str:
    return str(uuid.uuid4())


# urllib3 / requests failures that happen before any byte of the request is written.
_BEFORE_BODY = (
    "NewConnectionError",
    "NameResolutionError",
    "ConnectTimeoutError",
    "SSLError",
    "ProxyError",
    "LocationParseError",
    "ConnectTimeout",
)


def _chain(exc: BaseException):
    """``exc`` and everything it wraps (args, ``reason``, causes), without looping."""
    seen = set()
    stack = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        for nxt in (getattr(item, "reason", None), item.__cause__, item.__context__, *item.args):
            if isinstance(nxt, BaseException):
                stack.append(nxt)


def classify(exc: Exception, url: str) -> TransportError:
    """Turn a requests exception into a TransportError saying whether the body may have left."""
    names = {type(e).__name__ for e in _chain(exc)}
    before = isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)) or bool(
        names.intersection(_BEFORE_BODY)
    )
    if isinstance(exc, requests.exceptions.InvalidURL):
        before = True
    host = requests.utils.urlparse(url).netloc
    kind = type(exc).__name__
    if before:
        return TransportError(
            f"Could not reach {host} ({kind}): nothing was sent",
            nothing_sent=True,
        )
    return TransportError(
        f"Connection to {host} failed after the request was sent ({kind})",
        hint="The request may have been processed: check Sent Items before resending.",
        may_have_been_sent=True,
    )


BodyType = Union[bytes, str, None, Any]


class Transport:
    """Sends one HTTP request with timeouts, a fresh ``client-request-id``, and classified failures.

    ``session``, ``clock`` (monotonic seconds), ``sleep`` and ``request_id`` are injectable for tests.
    """

    def __init__(
        self,
        session: Optional[requests.Session] = None,
        timeouts: Timeouts = Timeouts(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        request_id: Callable[[], str] = new_request_id,
    ) -> None:
        self._session = session
        self.timeouts = timeouts
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.request_id = request_id

    @property
    def session(self) -> requests.Session:
        return self._session if self._session is not None else get_session()

    def deadline(self) -> float:
        """Absolute (clock) time by which a whole mail must be done."""
        return self.clock() + self.timeouts.total

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Optional[Mapping[str, str]] = None,
        data: BodyType = None,
        params: Optional[Mapping[str, str]] = None,
        deadline: Optional[float] = None,
        read_timeout: Optional[float] = None,
        client_request_id: Optional[str] = None,
    ) -> requests.Response:
        """One HTTP exchange; raises :class:`TransportError` (classified) instead of requests' errors.

        The read timeout is capped by what is left before ``deadline`` so a mail never outlives it.
        """
        read = self.timeouts.read if read_timeout is None else read_timeout
        if deadline is not None:
            left = deadline - self.clock()
            if left <= 0:
                raise TransportError(
                    "Deadline exceeded before the request was sent",
                    hint="Microsoft is slow or unreachable; the mail will be retried later.",
                    nothing_sent=True,
                )
            read = min(read, left)
        request_id = client_request_id or self.request_id()
        merged = {"client-request-id": request_id, "return-client-request-id": "true"}
        merged.update(headers or {})
        started = self.clock()
        try:
            response = self.session.request(
                method,
                url,
                headers=merged,
                data=data,
                params=params,
                timeout=(min(self.timeouts.connect, read), read),
                allow_redirects=False,
            )
            # Read the body now so a broken answer is classified here, not later.
            _ = response.content
        except requests.RequestException as exc:
            error = classify(exc, url)
            error.client_request_id = request_id
            _log.info(
                "%s %s failed after %.0f ms: %s",
                method,
                _loggable(url),
                (self.clock() - started) * 1000,
                error.message,
            )
            raise error from None
        response.client_request_id = request_id  # type: ignore[attr-defined]
        response.elapsed_ms = (self.clock() - started) * 1000  # type: ignore[attr-defined]
        return response


def _loggable(url: str) -> str:
    """URL without its query (upload URLs carry their own token there)."""
    return url.split("?", 1)[0]
