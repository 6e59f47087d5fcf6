"""JSON batching on the fake: POST /v1.0/$batch, inner requests through the normal routes, faults, call log."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from typing import Any, Dict, List, Optional

import pytest
import requests

from fake_microsoft.testing import delegated_token

ADMIN = "admin@contoso.onmicrosoft.com"


def incoming(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.com>"
    message["To"] = ADMIN
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    message["Date"] = "Mon, 06 May 2024 10:00:00 +0000"
    message.set_content(f"body of {subject} \u00e9")  # non-ASCII: the bytes must survive base64 exactly
    return message.as_bytes()


def post_batch(
    fake, token: Optional[str], payload: Any, path: str = "/$batch", headers: Optional[Dict[str, str]] = None
) -> requests.Response:
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(payload, (bytes, str)):
        headers.setdefault("Content-Type", "application/json")
        return requests.post(fake.graph_url + path, data=payload, headers=headers, timeout=10)
    return requests.post(fake.graph_url + path, json=payload, headers=headers, timeout=10)


def responses_of(answer: requests.Response) -> Dict[str, Dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {r["id"]: r for r in answer.json()["responses"]}


def assert_batch_refused(answer: requests.Response, message_part: str) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "BadRequest"
    assert message_part in error["message"]
    assert error["innerError"]["request-id"] == answer.headers["request-id"]


def inner_calls(fake) -> List[Dict[str, Any]]:
    return [c for c in fake.calls() if c["batched"]]


@pytest.fixture
def token(fake) -> str:
    return delegated_token(fake.url)


def test_value_gets_return_each_message_byte_for_byte_base64_encoded(fake, token):
    raws = [incoming(f"m{i}") for i in range(3)]
    ids = [fake.deliver(ADMIN, raw) for raw in raws]
    payload = {
        "requests": [
            {"id": "a", "method": "GET", "url": f"/me/messages/{ids[0]}/$value"},
            {"id": "b", "method": "GET", "url": f"/users/{ADMIN}/messages/{ids[1]}/%24value"},
            {"id": "c", "method": "GET", "url": f"me/messages/{ids[2]}/$value"},  # no leading slash
        ]
    }
    answer = post_batch(fake, token, payload, path="/%24batch")  # "$" percent-encoded, decoded by the server
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["request-id"]
    listed = answer.json()["responses"]
    assert [r["id"] for r in listed] == ["a", "b", "c"]  # request order kept
    for item, message_id in zip(listed, ids):
        assert item["status"] == 200
        assert item["headers"]["Content-Type"] == "text/plain"
        direct = requests.get(
            f"{fake.graph_url}/me/messages/{message_id}/$value", headers={"Authorization": f"Bearer {token}"}
        )
        assert base64.b64decode(item["body"], validate=True) == direct.content
    assert base64.b64decode(listed[0]["body"]) != base64.b64decode(listed[1]["body"])


def test_patch_is_read_and_dependent_move_are_both_applied(fake, token):
    message_id = fake.deliver(ADMIN, incoming("process me"))
    payload = {
        "requests": [
            {
                "id": "1",
                "method": "PATCH",
                "url": f"/me/messages/{message_id}",
                "headers": {"Content-Type": "application/json"},
                "body": {"isRead": True},
            },
            {
                "id": "2",
                "dependsOn": ["1"],
                "method": "POST",
                "url": f"/me/messages/{message_id}/move",
                "headers": {"Content-Type": "application/json"},
                "body": {"destinationId": "archive"},
            },
        ]
    }
    found = responses_of(post_batch(fake, token, payload))
    assert found["1"]["status"] == 200 and found["1"]["body"]["isRead"] is True
    assert found["1"]["headers"]["Content-Type"].startswith("application/json")
    assert found["2"]["status"] == 201
    moved_id = found["2"]["body"]["id"]
    assert moved_id != message_id  # moved without Prefer: a new id, as outside a batch
    [stored] = fake.mailbox_messages(ADMIN)
    assert (stored["id"], stored["folder"], stored["isRead"]) == (moved_id, "Archive", True)
    assert [(c["route"], c["batch_item"]) for c in inner_calls(fake)] == [("updateMessage", "1"), ("moveMessage", "2")]


def test_dependencies_run_first_even_when_listed_later(fake, token):
    message_id = fake.deliver(ADMIN, incoming("order"))
    payload = {
        "requests": [
            {"id": "get", "dependsOn": ["mark"], "method": "GET", "url": f"/me/messages/{message_id}?$select=isRead"},
            {
                "id": "mark",
                "method": "PATCH",
                "url": f"/me/messages/{message_id}",
                "headers": {"Content-Type": "application/json"},
                "body": {"isRead": True},
            },
        ]
    }
    answer = post_batch(fake, token, payload)
    assert [r["id"] for r in answer.json()["responses"]] == ["get", "mark"]
    assert responses_of(answer)["get"]["body"]["isRead"] is True
    assert [c["batch_item"] for c in inner_calls(fake)] == ["mark", "get"]


def test_inner_prefer_header_applies_to_that_request_only(fake, token):
    first, second = fake.deliver(ADMIN, incoming("keep id")), fake.deliver(ADMIN, incoming("new id"))
    move = {"Content-Type": "application/json"}
    payload = {
        "requests": [
            {"id": "1", "method": "POST", "url": f"/me/messages/{first}/move", "body": {"destinationId": "archive"},
             "headers": {**move, "Prefer": 'IdType="ImmutableId"'}},
            {"id": "2", "method": "POST", "url": f"/me/messages/{second}/move", "body": {"destinationId": "archive"},
             "headers": move},
        ]
    }  # fmt: skip
    found = responses_of(post_batch(fake, token, payload))
    assert found["1"]["body"]["id"] == first
    assert found["2"]["body"]["id"] != second


def test_twenty_requests_pass_and_twenty_one_are_refused(fake, token):
    message_id = fake.deliver(ADMIN, incoming("many"))
    one = {"method": "GET", "url": f"/me/messages/{message_id}"}
    assert len(responses_of(post_batch(fake, token, {"requests": [{"id": str(i), **one} for i in range(20)]}))) == 20
    before = len(inner_calls(fake))
    answer = post_batch(fake, token, {"requests": [{"id": str(i), **one} for i in range(21)]})
    assert_batch_refused(answer, "The maximum number of requests per batch is 20.")
    assert len(inner_calls(fake)) == before  # nothing ran


def test_inner_404_while_the_others_succeed(fake, token):
    message_id = fake.deliver(ADMIN, incoming("exists"))
    payload = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/me/messages/{message_id}"},
            {"id": "2", "method": "GET", "url": "/me/messages/AAMkNoSuchMessage"},
            {"id": "3", "method": "GET", "url": "/me/mailFolders/inbox"},
        ]
    }
    answer = post_batch(fake, token, payload)
    found = responses_of(answer)
    assert found["1"]["status"] == 200 and found["1"]["body"]["subject"] == "exists"
    assert found["3"]["status"] == 200 and found["3"]["body"]["displayName"] == "Inbox"
    assert found["2"]["status"] == 404
    error = found["2"]["body"]["error"]
    assert error["code"] == "ErrorItemNotFound"
    assert error["message"] == "The specified object was not found in the store."
    assert error["innerError"]["request-id"] == answer.headers["request-id"]  # the outer request's ids


def test_inner_permission_checks_use_the_outer_token(fake):
    token = delegated_token(fake.url, scopes="Mail.Read User.Read")
    message_id = fake.deliver(ADMIN, incoming("read only"))
    payload = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/me/messages/{message_id}/$value"},
            {"id": "2", "method": "PATCH", "url": f"/me/messages/{message_id}",
             "headers": {"Content-Type": "application/json"}, "body": {"isRead": True}},
        ]
    }  # fmt: skip
    found = responses_of(post_batch(fake, token, payload))
    assert found["1"]["status"] == 200
    assert found["2"]["status"] == 403 and found["2"]["body"]["error"]["code"] == "ErrorAccessDenied"
    assert fake.mailbox_messages(ADMIN)[0]["isRead"] is False


def test_fault_on_an_inner_route_is_that_response_only_with_retry_after(fake, token):
    ids = [fake.deliver(ADMIN, incoming(f"t{i}")) for i in range(2)]
    fake.inject("messageValue", status=429, retry_after=1)
    payload = {"requests": [{"id": str(i), "method": "GET", "url": f"/me/messages/{m}/$value"} for i, m in
                            enumerate(ids)]}  # fmt: skip
    answer = post_batch(fake, token, payload)
    assert answer.status_code == 200 and "Retry-After" not in answer.headers
    found = responses_of(answer)
    assert found["0"]["status"] == 429
    assert found["0"]["headers"]["Retry-After"] == "1"
    assert found["0"]["body"]["error"]["code"] == "ApplicationThrottled"
    assert found["1"]["status"] == 200 and b"Subject: t1" in base64.b64decode(found["1"]["body"])
    [throttled, served] = inner_calls(fake)
    assert (throttled["fault"], throttled["status"], served["status"]) == ("status", 429, 200)


def test_depends_on_a_failed_request_answers_424(fake, token):
    message_id = fake.deliver(ADMIN, incoming("untouched"))
    patch = {"headers": {"Content-Type": "application/json"}, "body": {"isRead": True}}
    payload = {
        "requests": [
            {"id": "1", "method": "GET", "url": "/me/messages/AAMkGone"},
            {"id": "2", "dependsOn": ["1"], "method": "PATCH", "url": f"/me/messages/{message_id}", **patch},
            {"id": "3", "dependsOn": ["2"], "method": "GET", "url": f"/me/messages/{message_id}"},
        ]
    }
    found = responses_of(post_batch(fake, token, payload))
    assert found["1"]["status"] == 404
    for dependent in ("2", "3"):  # 3 depends on 2, which failed with 424
        assert found[dependent]["status"] == 424
        assert found[dependent]["body"]["error"]["code"] == "FailedDependency"
        assert found[dependent]["body"]["error"]["message"] == "The dependent request failed."
    assert fake.mailbox_messages(ADMIN)[0]["isRead"] is False
    assert [c["batch_item"] for c in inner_calls(fake)] == ["1"]  # the others never ran


def test_fault_on_route_batch_fails_the_whole_batch(fake, token):
    message_id = fake.deliver(ADMIN, incoming("whole"))
    payload = {"requests": [{"id": "1", "method": "PATCH", "url": f"/me/messages/{message_id}",
                             "headers": {"Content-Type": "application/json"}, "body": {"isRead": True}}]}  # fmt: skip
    fake.inject("batch", status=429, retry_after="3")
    throttled = post_batch(fake, token, payload)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    fake.inject("batch", status=503)
    unavailable = post_batch(fake, token, payload)
    assert unavailable.status_code == 503 and unavailable.json()["error"]["code"] == "ServiceUnavailable"
    assert inner_calls(fake) == [] and fake.mailbox_messages(ADMIN)[0]["isRead"] is False
    assert [c["status"] for c in fake.calls("batch")] == [429, 503]
    assert responses_of(post_batch(fake, token, payload))["1"]["status"] == 200


def test_calls_log_one_outer_request_and_each_inner_operation(fake, token):
    ids = [fake.deliver(ADMIN, incoming(f"log{i}")) for i in range(3)]
    payload = {"requests": [{"id": f"r{i}", "method": "GET", "url": f"/me/messages/{m}/$value"} for i, m in
                            enumerate(ids)]}  # fmt: skip
    answer = post_batch(fake, token, payload, headers={"client-request-id": "5f0c0ffe-0000-4000-8000-000000000001"})
    assert answer.status_code == 200
    graph_calls = [c for c in fake.calls() if c["route"] != "token" and c["route"] != "authorize"]
    outer = [c for c in graph_calls if not c["batched"]]
    inner = [c for c in graph_calls if c["batched"]]
    assert [(c["route"], c["method"], c["path"], c["status"]) for c in outer] == [
        ("batch", "POST", "/v1.0/$batch", 200)
    ]
    assert [(c["route"], c["batch_item"], c["status"]) for c in inner] == [
        ("messageValue", f"r{i}", 200) for i in range(3)
    ]
    assert all(c["authorization"] for c in inner)
    assert {c["request_id"] for c in inner} == {outer[0]["request_id"]} == {answer.headers["request-id"]}
    assert {c["client_request_id"] for c in inner} == {"5f0c0ffe-0000-4000-8000-000000000001"}
    assert inner[0]["path"] == f"/v1.0/me/messages/{ids[0]}/$value"


def test_outer_request_without_authorization_is_401(fake, token):
    payload = {"requests": [{"id": "1", "method": "GET", "url": "/me"}]}
    answer = post_batch(fake, None, payload)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert inner_calls(fake) == []
    assert responses_of(post_batch(fake, token, payload))["1"]["body"]["userPrincipalName"] == ADMIN


def test_inner_urls_absolute_is_a_bad_batch_versioned_or_unknown_is_a_bad_item(fake, token):
    absolute = {"requests": [{"id": "1", "method": "GET", "url": f"{fake.graph_url}/me"}]}
    assert_batch_refused(post_batch(fake, token, absolute), "Invalid batch payload format.")
    payload = {
        "requests": [
            {"id": "1", "method": "GET", "url": "/v1.0/me"},
            {"id": "2", "method": "GET", "url": "/me/nosuchthing"},
            {"id": "3", "method": "GET", "url": "/me"},
        ]
    }
    found = responses_of(post_batch(fake, token, payload))
    assert found["1"]["status"] == 400
    assert found["1"]["body"]["error"]["message"] == "Resource not found for the segment 'v1.0'."
    assert found["2"]["status"] == 400
    assert found["2"]["body"]["error"]["message"] == "Resource not found for the segment 'nosuchthing'."
    assert found["3"]["status"] == 200


GET_ME = {"method": "GET", "url": "/me"}


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"requests": [{"id": "1", **GET_ME}, {"id": "1", **GET_ME}]}, "Request id '1' is used more than once"),
        ({"requests": [{"id": "a", **GET_ME}, {"id": "A", **GET_ME}]}, "Request id 'A' is used more than once"),
        ({"requests": [GET_ME]}, "has no 'id'"),
        ({"requests": [{"id": "1", "url": "/me"}]}, "Request '1' has no 'method'."),
        ({"requests": [{"id": "1", "method": "GET"}]}, "Request '1' has no 'url'."),
        ({"requests": [{"id": "1", **GET_ME, "dependsOn": ["9"]}]}, "depends on request '9', which is not in"),
        ({"requests": [{"id": "1", **GET_ME, "dependsOn": ["2"]}, {"id": "2", **GET_ME, "dependsOn": ["1"]}]},
         "forms a cycle"),
        ({"requests": [{"id": "1", "method": "PATCH", "url": "/me/messages/x", "body": {"isRead": True}}]},
         "Write request with id '1' does not contain a Content-Type header."),
        ({"requests": [{"id": "1", **GET_ME, "headers": {"Authorization": "Bearer other"}}]},
         "carries its own Authorization header"),
        ({"requests": [{"id": "1", "method": "GET", "url": "/$batch"}]}, "batches cannot be nested"),
        ({"requests": []}, "Invalid batch payload format."),
        ({"requets": [{"id": "1", **GET_ME}]}, "Invalid batch payload format."),
        ({"requests": {"id": "1", **GET_ME}}, "Invalid batch payload format."),
        ("{not json", "Unable to read JSON request payload."),
    ],
)  # fmt: skip
def test_malformed_batches_are_refused_whole(fake, token, payload, message):
    assert_batch_refused(post_batch(fake, token, payload), message)
    assert inner_calls(fake) == []
    [outer] = fake.calls("batch")
    assert (outer["status"], outer["code"]) == (400, "BadRequest")


def test_batch_is_post_only_and_json_only(fake, token):
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(fake.graph_url + "/$batch", headers=auth, timeout=10).status_code == 405
    form = requests.post(fake.graph_url + "/$batch", data="requests=1", headers=auth, timeout=10)
    assert form.status_code == 415 and form.json()["error"]["code"] == "UnsupportedMediaType"


def test_connection_fault_on_an_inner_route_answers_504_for_that_item(fake, token):
    message_id = fake.deliver(ADMIN, incoming("not processed"))
    fake.inject("updateMessage", action="close_before_processing")
    payload = {"requests": [{"id": "1", "method": "PATCH", "url": f"/me/messages/{message_id}",
                             "headers": {"Content-Type": "application/json"}, "body": {"isRead": True}}]}  # fmt: skip
    found = responses_of(post_batch(fake, token, payload))
    assert found["1"]["status"] == 504 and found["1"]["body"]["error"]["code"] == "GatewayTimeout"
    assert fake.mailbox_messages(ADMIN)[0]["isRead"] is False
    [inner] = inner_calls(fake)
    assert (inner["fault"], inner["status"]) == ("close_before_processing", None)
