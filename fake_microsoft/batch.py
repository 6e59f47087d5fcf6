"""Microsoft Graph JSON batching: ``POST /v1.0/$batch`` (https://learn.microsoft.com/graph/json-batching).

The batch is checked as a whole first (any mistake: 400 and nothing runs). Then each inner request becomes a
``Request`` of its own, with the outer request's Authorization, Host and request ids, and goes through the
server's ``process`` (same route table, handlers, fault injection by the inner route's name and call log, where
it is marked ``batched``). Inner requests run one after the other: those with ``dependsOn`` after what they
depend on, the others in the given order. Answers come back in request order.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote

from . import graph
from .state import State
from .web import GraphError, Request, Response, json_response, utcnow_iso

MAX_REQUESTS = 20
INVALID_PAYLOAD = "Invalid batch payload format."
TOO_MANY = f"Batch request limit exceeded. The maximum number of requests per batch is {MAX_REQUESTS}."
FAILED_DEPENDENCY = "The dependent request failed."
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# (state, request, started, batch_item) -> (route, response or None, fault action)
Process = Callable[..., Tuple[Optional[str], Optional[Response], Optional[str]]]


class _Item:
    def __init__(self, index: int, raw: Dict[str, Any]) -> None:
        self.index = index
        self.id: str = raw["id"]
        self.method: str = raw["method"].upper()
        self.url: str = raw["url"]
        self.headers: Dict[str, str] = raw.get("headers") or {}
        self.has_body = raw.get("body") is not None
        self.body_value = raw.get("body")
        self.depends_on: List[str] = list(raw.get("dependsOn") or [])
        self.body = b""


def _bad(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _header(headers: Dict[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _encode_body(item: _Item) -> bytes:
    """JSON for a JSON Content-Type; any other type carries the bytes base64-encoded (URL-safe or not)."""
    media = (_header(item.headers, "content-type") or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return json.dumps(item.body_value).encode("utf-8")
    if not isinstance(item.body_value, str):
        raise _bad(f"The body of request '{item.id}' must be a base64 string for Content-Type '{media}'.")
    text = item.body_value.strip()
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"The body of request '{item.id}' is not a valid base64 value.")


def _parse(payload: Dict[str, Any]) -> List[_Item]:
    """Every check on the batch itself; raises 400 BadRequest before anything runs."""
    requests = payload.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _bad(INVALID_PAYLOAD)
    if len(requests) > MAX_REQUESTS:
        raise _bad(TOO_MANY)
    items: List[_Item] = []
    seen: Dict[str, str] = {}
    for index, raw in enumerate(requests):
        if not isinstance(raw, dict):
            raise _bad(INVALID_PAYLOAD)
        ident = raw.get("id")
        if not isinstance(ident, str) or not ident.strip():
            raise _bad(f"Request at position {index + 1} has no 'id'; each request needs a unique string id.")
        if ident.lower() in seen:  # ids are not case-sensitive
            raise _bad(f"Request id '{ident}' is used more than once; ids must be unique in a batch.")
        seen[ident.lower()] = ident
        method, url = raw.get("method"), raw.get("url")
        if not isinstance(method, str) or not method.strip():
            raise _bad(f"Request '{ident}' has no 'method'.")
        if method.upper() not in METHODS:
            raise _bad(f"Request '{ident}' has an unsupported method '{method}'.")
        if not isinstance(url, str) or not url.strip():
            raise _bad(f"Request '{ident}' has no 'url'.")
        if "://" in url or url.startswith("//"):
            raise _bad(INVALID_PAYLOAD)  # Graph wants URLs relative to the version, e.g. "/me/messages"
        headers = raw.get("headers")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
        ):
            raise _bad(f"The headers of request '{ident}' must be an object of strings.")
        if headers and _header(headers, "authorization") is not None:
            raise _bad(
                f"Request '{ident}' carries its own Authorization header: individual requests use the "
                "batch request's Authorization."
            )
        if raw.get("body") is not None and not (headers and _header(headers, "content-type")):
            raise _bad(f"Write request with id '{ident}' does not contain a Content-Type header.")
        depends = raw.get("dependsOn")
        if depends is not None and (
            not isinstance(depends, list) or not all(isinstance(d, str) and d for d in depends)
        ):
            raise _bad(f"The dependsOn of request '{ident}' must be a list of request ids.")
        item = _Item(index, raw)
        if item.has_body:
            item.body = _encode_body(item)
        items.append(item)
    for item in items:
        for dep in item.depends_on:
            if dep.lower() not in seen:
                raise _bad(f"Request '{item.id}' depends on request '{dep}', which is not in the batch.")
            if dep.lower() == item.id.lower():
                raise _bad(f"Request '{item.id}' depends on itself.")
    return items


def _order(items: List[_Item]) -> List[_Item]:
    """The given order, each request moved after what it depends on; a cycle is a bad batch."""
    by_id = {i.id.lower(): i for i in items}
    done: Dict[str, bool] = {}
    ordered: List[_Item] = []

    def visit(item: _Item, path: List[str]) -> None:
        key = item.id.lower()
        if done.get(key):
            return
        if key in path:
            raise _bad(f"The dependsOn of request '{item.id}' forms a cycle.")
        for dep in item.depends_on:
            visit(by_id[dep.lower()], [*path, key])
        done[key] = True
        ordered.append(item)

    for item in items:
        visit(item, [])
    return ordered


def _inner_request(outer: Request, item: _Item) -> Request:
    relative = item.url.strip()
    path_part, _, query = relative.partition("?")
    path = "/v1.0/" + unquote(path_part).lstrip("/")  # decoded like a request line: "%24value" is "$value"
    headers = {k: v for k, v in item.headers.items() if k.lower() not in ("host", "content-length")}
    headers["Host"] = outer.host
    authorization = outer.header("authorization")
    if authorization is not None:
        headers["Authorization"] = authorization
    if outer.echo_client_request_id:
        headers["client-request-id"] = outer.client_request_id
    inner = Request(item.method, path, query, headers, item.body, len(item.body))
    inner.request_id = outer.request_id
    inner.client_request_id = outer.client_request_id
    inner.echo_client_request_id = outer.echo_client_request_id
    return inner


def _render(item: _Item, response: Response) -> Dict[str, Any]:
    headers: Dict[str, str] = {}
    for name, value in response.headers:
        if name.lower() != "content-length":
            headers[name] = value
    answer: Dict[str, Any] = {"id": item.id, "status": response.status, "headers": headers}
    if response.body:
        media = (response.header("content-type") or "").split(";")[0].strip().lower()
        if media == "application/json":
            answer["body"] = json.loads(response.body.decode("utf-8"))
        else:
            answer["body"] = base64.b64encode(response.body).decode("ascii")
    return answer


def _error_item(item: _Item, outer: Request, status: int, code: str, message: str) -> Dict[str, Any]:
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": utcnow_iso()[:-1],
                "request-id": outer.request_id,
                "client-request-id": outer.client_request_id,
            },
        }
    }
    return {"id": item.id, "status": status, "headers": {"Content-Type": "application/json"}, "body": body}


def run_batch(state: State, request: Request, process: Process) -> Response:
    """``POST /v1.0/$batch``: 200 ``{"responses": [{"id", "status", "headers", "body"?}, ...]}``."""
    graph._check_size(request)
    with state.lock:
        graph._authenticate(state, request)
    payload = graph._parse_json(request)
    items = _parse(payload)
    for item in items:
        if _inner_request(request, item).path.rstrip("/").lower() == "/v1.0/$batch":
            raise _bad(f"Request '{item.id}' is a batch itself: batches cannot be nested.")
    answers: Dict[str, Dict[str, Any]] = {}
    for item in _order(items):
        failed = [d for d in item.depends_on if answers[d.lower()]["status"] >= 400]
        if failed:
            answers[item.id.lower()] = _error_item(item, request, 424, "FailedDependency", FAILED_DEPENDENCY)
            continue
        _route, response, action = process(state, _inner_request(request, item), None, item.id)
        if response is None:  # a close_* fault on the inner route: the back end never answered
            answers[item.id.lower()] = _error_item(
                item, request, 504, "GatewayTimeout", f"Injected fault: {action} on this request."
            )
        else:
            answers[item.id.lower()] = _render(item, response)
    return json_response(200, {"responses": [answers[i.id.lower()] for i in items]})
