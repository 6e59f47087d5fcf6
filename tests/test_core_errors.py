from __future__ import annotations

import json

import pytest

from graph_mail import errors
from graph_mail.errors import (
    AADSTS_HINTS,
    GRAPH_HINTS,
    AuthenticationError,
    GraphApiError,
    InvalidGrantError,
    MailboxNotFound,
    MessageRejected,
    MessageTooLarge,
    PermissionDenied,
    ServiceUnavailable,
    Throttled,
    error_from_graph_response,
    error_from_token_response,
)

# Every AADSTS code listed in graph-protocol.md, with the error Microsoft sends it under.
PROTOCOL_AADSTS = [
    (7000215, "invalid_client", AuthenticationError, "Secret ID"),
    (7000222, "invalid_client", AuthenticationError, "expired"),
    (700016, "unauthorized_client", AuthenticationError, "client (application) ID"),
    (90002, "invalid_request", AuthenticationError, "tenant"),
    (50011, "invalid_request", AuthenticationError, "redirect URI"),
    (65001, "invalid_grant", InvalidGrantError, "consent"),
    (50076, "interaction_required", InvalidGrantError, "MFA"),
    (50079, "interaction_required", InvalidGrantError, "MFA"),
    (53003, "access_denied", AuthenticationError, "Conditional Access"),
    (700082, "invalid_grant", InvalidGrantError, "inactivity"),
    (50173, "invalid_grant", InvalidGrantError, "password changed"),
    (70008, "invalid_grant", InvalidGrantError, "expired"),
    (50057, "invalid_grant", InvalidGrantError, "disabled"),
]


@pytest.mark.parametrize(("code", "error", "cls", "words"), PROTOCOL_AADSTS)
def test_each_aadsts_code_gets_its_class_and_hint(code, error, cls, words):
    result = {
        "error": error,
        "error_description": f"AADSTS{code}: Something went wrong.\r\nTrace ID: abc\r\nCorrelation ID: def",
        "error_codes": [code],
        "trace_id": "trace-1",
        "correlation_id": "corr-1",
    }
    err = error_from_token_response(result)
    assert type(err) is cls
    assert err.hint == AADSTS_HINTS[code]
    assert words.lower() in err.hint.lower()
    assert err.code == f"AADSTS{code}"
    assert err.request_id == "trace-1"
    assert "\n" not in str(err) and f"AADSTS{code}" in str(err)
    assert "Trace ID" not in err.message  # only the first line of Microsoft's description
    assert err.nothing_sent and not err.may_have_been_sent and not err.retryable


def test_wrong_secret_hint_mentions_value_versus_id():
    err = error_from_token_response(
        {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
    )
    assert isinstance(err, AuthenticationError) and not isinstance(err, InvalidGrantError)
    assert "Value" in err.hint and "Secret ID" in err.hint


def test_invalid_grant_says_reauthentication_needed():
    err = error_from_token_response({"error": "invalid_grant", "error_description": "AADSTS50173: revoked"})
    assert isinstance(err, InvalidGrantError)
    assert "re-authentication needed" in str(err).lower()


def test_every_hint_is_one_sentence_line():
    for hint in list(AADSTS_HINTS.values()) + list(GRAPH_HINTS.values()):
        assert hint and "\n" not in hint and hint.endswith(".")


def _body(code, message="msg", request_id="req-1"):
    return json.dumps(
        {"error": {"code": code, "message": message, "innerError": {"request-id": request_id, "date": "x"}}}
    ).encode()


# Every Graph code listed in graph-protocol.md, with its status.
PROTOCOL_GRAPH = [
    (401, "InvalidAuthenticationToken", AuthenticationError),
    (403, "ErrorAccessDenied", PermissionDenied),
    (403, "AccessDenied", PermissionDenied),
    (403, "ErrorSendAsDenied", PermissionDenied),
    (404, "MailboxNotEnabledForRESTAPI", MailboxNotFound),
    (404, "ResourceNotFound", MailboxNotFound),
    (404, "ErrorItemNotFound", GraphApiError),
    (400, "ErrorInvalidRecipients", MessageRejected),
    (400, "ErrorInvalidInternetMessageHeader", MessageRejected),
    (400, "RequestBodyRead", MessageRejected),
    (413, "RequestBodyTooLarge", MessageTooLarge),
    (400, "ErrorMessageSizeExceeded", MessageTooLarge),
    (429, "ApplicationThrottled", Throttled),
    (429, "MailboxConcurrency", Throttled),
    (503, "ServiceUnavailable", ServiceUnavailable),
    (504, "GatewayTimeout", ServiceUnavailable),
    (500, "InternalServerError", ServiceUnavailable),
    (502, "BadGateway", ServiceUnavailable),
]


@pytest.mark.parametrize(("status", "code", "cls"), PROTOCOL_GRAPH)
def test_each_graph_code_gets_its_class_and_hint(status, code, cls):
    err = error_from_graph_response(status, {"request-id": "req-9"}, _body(code), client_request_id="cr-1")
    assert type(err) is cls
    assert err.hint == GRAPH_HINTS[code]
    assert err.code == code and err.status == status
    assert err.request_id == "req-9" and err.client_request_id == "cr-1"
    line = str(err)
    assert "\n" not in line and code in line and "req-9" in line and "cr-1" in line


def test_request_id_falls_back_to_inner_error():
    err = error_from_graph_response(400, {}, _body("RequestBodyRead", request_id="inner-7"))
    assert err.request_id == "inner-7"


def test_unknown_code_uses_status_hint_and_non_json_body():
    err = error_from_graph_response(403, {}, b"<html>nope</html>")
    assert isinstance(err, PermissionDenied) and err.hint == errors.STATUS_HINTS[403]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_on_a_send_may_have_been_sent(status):
    err = error_from_graph_response(status, {}, _body("x"), sending=True)
    assert err.may_have_been_sent and not err.nothing_sent and not err.retryable
    assert "may have been sent" in str(err)


def test_server_errors_on_other_calls_are_not_ambiguous():
    err = error_from_graph_response(500, {}, _body("x"), sending=False)
    assert not err.may_have_been_sent and err.nothing_sent and err.retryable


def test_503_with_retry_after_on_send_is_not_processed():
    err = error_from_graph_response(503, {}, _body("ServiceUnavailable"), sending=True, retry_after=2.0)
    assert err.nothing_sent and not err.may_have_been_sent and err.retryable and err.retry_after == 2.0
    ambiguous = error_from_graph_response(503, {}, _body("ServiceUnavailable"), sending=True)
    assert ambiguous.may_have_been_sent


def test_rejections_are_nothing_sent_and_not_retryable():
    err = error_from_graph_response(400, {}, _body("ErrorInvalidRecipients"), sending=True)
    assert err.nothing_sent and not err.retryable
    throttled = error_from_graph_response(429, {}, _body("ApplicationThrottled"), sending=True, retry_after=1.5)
    assert throttled.nothing_sent and throttled.retryable and throttled.retry_after == 1.5


def test_error_text_never_carries_a_secret():
    err = error_from_graph_response(
        400, {}, _body("RequestBodyRead", message="bad Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln code=abc")
    )
    text = str(err) + repr(err)
    assert "eyJ" not in text and "code=abc" not in text


def test_hint_for_accepts_numbers_strings_and_statuses():
    assert errors.hint_for(7000215) == AADSTS_HINTS[7000215]
    assert errors.hint_for("AADSTS50011: x") == AADSTS_HINTS[50011]
    assert errors.hint_for("ErrorSendAsDenied") == GRAPH_HINTS["ErrorSendAsDenied"]
    assert errors.hint_for(None, 429) == errors.STATUS_HINTS[429]


def test_odd_types_in_microsofts_answers_stay_inside_the_error_tree():
    """Answers are data: a numeric code, a list as request id or error_codes of strings never crash str()."""
    from graph_mail.errors import GraphApiError, error_from_token_response

    error = GraphApiError("Graph failed", status=400, code=123, request_id=["x"], client_request_id=4.5)
    assert error.code == "123" and error.request_id is None and error.client_request_id == "4.5"
    assert "123" in str(error)
    weird = error_from_token_response({"error": "invalid_client", "error_codes": ["7000215", None]})
    assert isinstance(weird, GraphApiError) and str(weird)
    assert error_from_token_response({"error": "invalid_client", "error_codes": "7000215"}).code == "invalid_client"
    assert error_from_token_response({"error": "invalid_client", "error_codes": True}).code == "invalid_client"


def test_mailbox_concurrency_is_named_by_graphs_message_not_its_code():
    # What Graph answers (and the fake): code ApplicationThrottled, the limit named in the message only.
    body = json.dumps(
        {"error": {"code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit."}}
    ).encode()
    err = error_from_graph_response(429, {"Retry-After": "1"}, body, retry_after=1.0)
    assert type(err) is Throttled and err.code == "ApplicationThrottled" and err.retry_after == 1.0
    assert err.hint == GRAPH_HINTS["MailboxConcurrency"]
