from __future__ import annotations

import email.utils

import pytest

from graph_mail import RetryPolicy, ServiceUnavailable, Throttled, TransportError
from graph_mail.errors import MessageRejected, error_from_graph_response
from graph_mail.retry import parse_retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("value", "expected"), [("2", 2.0), ("0", 0.0), ("1.5", 1.5), (" 0.25 ", 0.25)])
def test_retry_after_seconds(value, expected):
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date():
    value = email.utils.formatdate(NOW + 7, usegmt=True)
    assert parse_retry_after(value, NOW) == pytest.approx(7.0)
    past = email.utils.formatdate(NOW - 100, usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf"])
def test_retry_after_garbage(value):
    assert parse_retry_after(value, NOW) is None


def test_negative_seconds_clamp_to_zero():
    assert parse_retry_after("-3", NOW) == 0.0


def _graph(status, retry_after=None, sending=True):
    return error_from_graph_response(status, {}, b"", sending=sending, retry_after=retry_after)


POLICY = RetryPolicy(attempts=3, backoff=1.0, jitter=0.0, max_retry_after=30)


def test_retries_outcomes_known_not_to_have_sent():
    assert POLICY.next_delay(TransportError("refused", nothing_sent=True), 1, 0, None) == 1.0
    assert POLICY.next_delay(_graph(429, 1.5), 1, 0, None) == 1.5
    assert POLICY.next_delay(_graph(503, 2.0), 1, 0, None) == 2.0


@pytest.mark.parametrize(
    "error",
    [
        TransportError("read timeout", may_have_been_sent=True),
        _graph(500),
        _graph(502),
        _graph(504),
        _graph(503),  # no Retry-After: not promised to be unprocessed
        _graph(400),
    ],
)
def test_never_retries_ambiguous_outcomes(error):
    assert POLICY.next_delay(error, 1, 0, None) is None


def test_idempotent_calls_may_retry_ambiguous_ones():
    assert POLICY.next_delay(TransportError("t", may_have_been_sent=True), 1, 0, None, idempotent=True) == 1.0
    assert POLICY.next_delay(_graph(502, sending=False), 1, 0, None, idempotent=True) == 1.0
    assert POLICY.next_delay(MessageRejected("no", status=400), 1, 0, None, idempotent=True) is None


def test_attempts_are_bounded():
    err = _graph(429, 0.1)
    assert POLICY.next_delay(err, 2, 0, None) == 0.1
    assert POLICY.next_delay(err, 3, 0, None) is None


def test_deadline_stops_waiting():
    err = Throttled("slow down", status=429, retry_after=5.0)
    assert POLICY.next_delay(err, 1, now=100.0, deadline=104.0) is None
    assert POLICY.next_delay(err, 1, now=100.0, deadline=106.0) == 5.0


def test_too_long_retry_after_goes_back_to_the_caller():
    err = ServiceUnavailable("later", status=503, retry_after=3600.0)
    assert POLICY.next_delay(err, 1, 0, None) is None


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(backoff=0.5, max_backoff=3.0, jitter=0.5)
    assert policy.backoff_delay(1, rand=lambda: 0.0) == 0.5
    assert policy.backoff_delay(2, rand=lambda: 0.0) == 1.0
    assert policy.backoff_delay(5, rand=lambda: 0.0) == 3.0
    assert policy.backoff_delay(1, rand=lambda: 1.0) == 0.75
