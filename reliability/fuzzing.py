"""Section 2: fuzzing with hypothesis. The core (graph_mail) turns Odoo's messages into Graph requests and
Microsoft's answers into errors; whatever comes in, only a GraphMailError (with a printable text) may come
out. Runs without Odoo: ``python -m reliability.fuzzing [--examples N] [--json]``.

Targets (examples split by weight):
- message conversion: build_plan() on MIME parsed from fuzzed bytes (odd headers, charsets, encodings,
  multipart structures, huge and non-ASCII headers), with small request limits to force the draft path;
- Graph's error answers: error_from_graph_response() on any status/headers/body, parse_retry_after();
- the identity platform's error answers: error_from_token_response() on any dict;
- the client over HTTP: GraphMailClient.send() and the draft/upload path against a scripted session that
  answers anything (statuses, content types, malformed JSON, odd upload URLs and ranges, dropped connections);
- token answers through msal: TokenProvider against a token endpoint answering anything.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import json
import logging
import sys
import time
import traceback
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from graph_mail import Envelope, GraphMailClient, GraphMailError, MailboxCredentials, TokenProvider, resolve_cloud
from graph_mail.auth import clear_caches
from graph_mail.client import _Context
from graph_mail.errors import error_from_graph_response, error_from_token_response
from graph_mail.message import build_plan
from graph_mail.retry import parse_retry_after
from graph_mail.transport import Timeouts, Transport

from .report import Check, SectionResult

SECTION = "fuzzing"
TENANT = "7a3c6f0e-2b1d-4e5f-9a8b-0c1d2e3f4a5b"
CLIENT = "2f9b8c7d-6e5a-4b3c-8d2e-1f0a9b8c7d6e"
BASE = "http://127.0.0.1:9"  # never contacted: every request goes to the scripted session
SENDER = "admin@contoso.onmicrosoft.com"


class Escaped(Exception):
    """Something other than a GraphMailError came out of the core."""


class Findings:
    """Examples run and distinct escapes (by exception type and the graph_mail line it left from), each with
    its shortest example. Recording instead of failing lets every target run all its examples."""

    def __init__(self) -> None:
        self.n = 0
        self.escapes: Dict[Tuple[str, str], Tuple[int, str, str]] = {}

    def guarded(self, call: Callable[[], Any], example: Callable[[], str]) -> None:
        try:
            call()
        except GraphMailError as error:
            try:
                text = str(error)  # must be printable: it becomes the mail's failure reason
                if not isinstance(text, str) or not isinstance(error.hint, str):
                    raise Escaped(f"{type(error).__name__} with a non-text message or hint")
            except Exception as broken:
                self.record(broken, example)
        except Exception as escaped:
            self.record(escaped, example)

    def record(self, error: BaseException, example: Callable[[], str]) -> None:
        frames = traceback.extract_tb(error.__traceback__)
        ours = [f for f in frames if "/graph_mail/" in f.filename] or frames
        where = ours[-1] if ours else None
        place = f"{where.filename.split('/')[-1]}:{where.lineno} ({where.name})" if where else "?"
        if frames and where is not None and frames[-1] is not where:
            place += f" -> {frames[-1].filename.split('/')[-1]}:{frames[-1].lineno}"
        key = (type(error).__name__, place)
        text = example()
        count, shortest, message = self.escapes.get(key, (0, text, str(error)[:160]))
        if len(text) < len(shortest):
            shortest, message = text, str(error)[:160]
        self.escapes[key] = (count + 1, shortest, message)

    def describe(self) -> str:
        return " | ".join(
            f"{name}: {message} at {place} ({count}x; e.g. {' '.join(example.split())[:300]})"
            for (name, place), (count, example, message) in sorted(self.escapes.items())
        )


# -- strategies -----------------------------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=80),
    st.sampled_from(
        ["", " ", "\r\n", "=?utf-8?b?w6k=?=", "=?bogus?q?x?=", "Zoë Ünïcødé 日本語", "\x00\x7f", "é" * 300]
    ),
)
header_names = st.one_of(
    st.sampled_from(
        [
            "Subject",
            "From",
            "To",
            "Cc",
            "Bcc",
            "Reply-To",
            "Message-ID",
            "In-Reply-To",
            "References",
            "Date",
            "Content-Type",
            "Content-Transfer-Encoding",
            "Content-Disposition",
            "X-Odoo-Objects",
            "MIME-Version",
            "Return-Path",
            "Sender",
        ]
    ),
    st.from_regex(r"\A[!-9;-~]{1,40}\Z"),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "text/plain",
            "text/html",
            "multipart/mixed",
            "multipart/alternative",
            "multipart/related",
            "application/octet-stream",
            "image/png",
            "message/rfc822",
            "application/json",
            "text/plain; charset=bogus",
            "text/plain; charset=utf-8",
            "multipart/mixed; boundary=",
            "",
            "/",
            "text",
        ]
    ),
    st.text(max_size=40),
)
encodings = st.sampled_from(["", "base64", "quoted-printable", "7bit", "8bit", "binary", "x-uuencode", "bogus"])


@st.composite
def raw_mime(draw, depth: int = 0) -> bytes:
    """RFC 5322-ish bytes with everything a sender (or a bug) may put there."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(header_names)
        value = draw(odd_text)
        if draw(st.booleans()):
            value = value.replace("\r", "").replace("\n", "")
        lines.append(f"{name}: {value}".encode("utf-8", "surrogatepass"))
    if draw(st.integers(0, 20)) == 0:
        lines.append(b"X-Huge: " + b"a" * draw(st.integers(1000, 200_000)))
    if draw(st.integers(0, 10)) == 0:
        lines.append(b"Subject: " + draw(st.binary(max_size=200)).replace(b"\n", b" "))
    kind = draw(st.sampled_from(["single", "multipart", "attachment"])) if depth < 2 else "single"
    if kind == "single":
        lines.append(b"Content-Type: " + draw(content_types).encode("utf-8", "surrogatepass"))
        encoding = draw(encodings)
        if encoding:
            lines.append(b"Content-Transfer-Encoding: " + encoding.encode())
        body = draw(st.one_of(st.binary(max_size=400), st.text(max_size=400).map(lambda t: t.encode("utf-8"))))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body
    boundary = draw(st.sampled_from(["b1", "==x==", "", "a" * 80, "é"]))
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "bogus"]))
    lines.append(f'Content-Type: multipart/{subtype}; boundary="{boundary}"'.encode())
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        if kind == "attachment" or draw(st.booleans()):
            name = draw(odd_text).replace('"', "")
            size = draw(st.integers(0, 6000))
            payload = draw(st.sampled_from([b"QUJD" * (size // 4), b"!!not base64!!", b"", b"=\r\n" * 10]))
            part = (
                f'Content-Type: {draw(content_types)}; name="{name}"\r\n'
                f"Content-Disposition: {draw(st.sampled_from(['attachment', 'inline', 'bogus', '']))}; "
                f'filename="{name}"\r\n'
                f"Content-ID: <{draw(odd_text)}>\r\n"
                f"Content-Transfer-Encoding: {draw(encodings)}\r\n\r\n"
            ).encode("utf-8", "surrogatepass") + payload
        else:
            part = draw(raw_mime(depth=depth + 1))
        parts.append(part)
    sep = b"--" + boundary.encode("utf-8")
    body = b"".join(sep + b"\r\n" + part + b"\r\n" for part in parts)
    if draw(st.booleans()):
        body += sep + b"--\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


policies = st.sampled_from([email.policy.default, email.policy.SMTP, email.policy.compat32])
addresses = st.lists(
    st.one_of(st.emails(), st.sampled_from(["alice@fabrikam.example", "zoë@exämple.com", "x", "", "a@b@c", " "])),
    max_size=4,
)

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
graph_error_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "error": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {"code": json_values, "message": json_values, "innerError": json_values},
                    optional={"innererror": json_values},
                ),
            )
        }
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"<html>502 Bad Gateway</html>", b"{", b'{"error":', b"\xff\xfe\x00", b"null", b"[]"]),
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
    st.sampled_from(["", "0", "-1", "1e309", "nan", "Wed, 21 Oct 2015 07:28:00 GMT", "Thu, 01 Jan 1970", "x" * 10000]),
)
response_headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Content-Type", "request-id", "client-request-id", "Location", "X-Odd", "Date"]),
    header_values,
    max_size=5,
)


# -- targets --------------------------------------------------------------------------------------------


def target_message(count: Findings) -> Callable[[], None]:
    @given(
        raw=raw_mime(),
        policy=policies,
        recipients=addresses,
        limit=st.sampled_from([None, 600, 3000, 20000]),
        upload_min=st.sampled_from([None, 100, 2000]),
    )
    def run(raw, policy, recipients, limit, upload_min):
        count.n += 1
        message = email.message_from_bytes(raw, policy=policy)
        kwargs: Dict[str, Any] = {}
        if limit:
            kwargs["max_request_bytes"] = limit
        if upload_min:
            kwargs["upload_min"] = upload_min

        def convert():
            plan = build_plan(message, Envelope(SENDER, recipients), **kwargs)
            for attachment in plan.uploads:
                attachment.attachment_item()
                for _ in attachment.chunks():
                    pass
            for attachment in plan.attachments:
                attachment.file_attachment()

        count.guarded(
            convert, lambda: f"policy={policy.__class__.__name__} recipients={recipients!r} raw={raw[:300]!r}"
        )

    return run


def target_graph_answers(count: Findings) -> Callable[[], None]:
    @given(
        status=st.one_of(st.integers(100, 599), st.sampled_from([400, 401, 403, 404, 413, 429, 500, 503, 504])),
        headers=response_headers,
        body=graph_error_bodies,
        sending=st.booleans(),
        retry_after=st.one_of(st.none(), st.floats(allow_nan=True)),
    )
    def run(status, headers, body, sending, retry_after):
        count.n += 1

        def answer():
            error = error_from_graph_response(status, headers, body, sending=sending, retry_after=retry_after)
            if not isinstance(error, GraphMailError):
                raise Escaped(f"returned {type(error).__name__}")
            raise error

        def retry_after_header():
            value = parse_retry_after(headers.get("Retry-After"), time.time())
            if value is not None and not (value >= 0 and value != float("inf")):
                raise Escaped(f"parse_retry_after gave {value!r}")

        example = lambda: f"status={status} headers={headers!r} body={body[:200]!r}"  # noqa: E731
        count.guarded(answer, example)
        count.guarded(retry_after_header, example)

    return run


def target_token_answers(count: Findings) -> Callable[[], None]:
    keys = st.sampled_from(["error", "error_description", "error_codes", "trace_id", "correlation_id", "suberror"])

    @given(result=st.dictionaries(keys, json_values, max_size=6), status=st.one_of(st.none(), st.integers(100, 599)))
    def run(result, status):
        count.n += 1

        def answer():
            error = error_from_token_response(result, status=status)
            if not isinstance(error, GraphMailError):
                raise Escaped(f"returned {type(error).__name__}")
            raise error

        count.guarded(answer, lambda: f"result={result!r} status={status}")

    return run


class ScriptedSession(requests.Session):
    """Answers each request with the next scripted answer (a response spec or an exception class)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: List[Any] = []
        self.fallback: Optional[Callable[[str, str], Any]] = None

    def request(self, method, url, **kwargs):  # type: ignore[override]
        spec = self.script.pop(0) if self.script else (self.fallback(method, url) if self.fallback else None)
        if spec is None:
            spec = (202, {}, b"")
        if isinstance(spec, type) and issubclass(spec, BaseException):
            raise spec("scripted failure")
        status, headers, body = spec
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(headers)
        response._content = body
        response.url = url
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        return response


transport_failures = st.sampled_from(
    [
        requests.ConnectionError,
        requests.ReadTimeout,
        requests.ConnectTimeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
        requests.exceptions.SSLError,
        requests.exceptions.InvalidURL,
        requests.exceptions.TooManyRedirects,
    ]
)
draft_bodies = st.one_of(
    graph_error_bodies,
    st.fixed_dictionaries(
        {},
        optional={
            "id": json_values,
            "uploadUrl": st.one_of(
                json_values,
                st.sampled_from(
                    [
                        f"{BASE}/upload/x?tempauth=t",
                        "https://evil.example/upload",
                        "http://evil.example/u",
                        "ftp://x",
                        "",
                        "http://127.0.0.1:9/u?x=1#f",
                        "//127.0.0.1/u",
                        "http://[::1/",
                    ]
                ),
            ),
            "nextExpectedRanges": st.one_of(
                json_values,
                st.lists(st.sampled_from(["0-", "327680-", "5-3", "-", "abc", "999999999999-"]), max_size=3),
            ),
        },
    ).map(lambda v: json.dumps(v).encode()),
)
answers = st.one_of(
    transport_failures,
    st.tuples(
        st.sampled_from([200, 201, 202, 204, 400, 401, 404, 413, 416, 429, 500, 503, 504]),
        response_headers,
        draft_bodies,
    ),
)


class StaticToken:
    account = None

    def access_token(self) -> str:
        return "fuzz-access-token"

    def invalidate(self, access_token: Optional[str] = None) -> None:
        return None


def _client_fixture() -> Tuple[ScriptedSession, GraphMailClient, Any, Any]:
    session = ScriptedSession()
    credentials = MailboxCredentials(
        tenant_id=TENANT,
        client_id=CLIENT,
        client_secret="fuzz-secret",
        cloud=resolve_cloud("global", BASE, BASE + "/v1.0"),
    )
    transport = Transport(session=session, timeouts=Timeouts(total=3600), sleep=lambda seconds: None)
    client = GraphMailClient(credentials, token_provider=StaticToken(), transport=transport)  # type: ignore[arg-type]
    message = email.message.EmailMessage()
    message["From"] = SENDER
    message["To"] = "alice@fabrikam.example"
    message["Subject"] = "Fuzz ü"
    message["Message-ID"] = "<fuzz@contoso.example>"
    message.set_content("body " * 50)
    message.add_attachment(b"A" * 1500, maintype="application", subtype="pdf", filename="big.pdf")
    message.add_attachment(b"B" * 300, maintype="image", subtype="png", filename="small.png")
    envelope = Envelope(SENDER, ["alice@fabrikam.example"])
    plan = build_plan(message, envelope, max_request_bytes=1200, upload_min=1000)  # one upload, one post
    return session, client, (message, envelope), plan


def target_client(count: Findings) -> Callable[[], None]:
    session, client, (message, envelope), plan = _client_fixture()

    @given(script=st.lists(answers, max_size=10), path=st.sampled_from(["send", "draft"]))
    def run(script, path):
        count.n += 1
        session.script = list(script)
        example = lambda: f"path={path} answers={[a if isinstance(a, tuple) else a.__name__ for a in script]!r}"  # noqa: E731
        if path == "send":
            count.guarded(lambda: client.send(message, envelope), example)
        else:
            count.guarded(
                lambda: client._send_draft(_Context(time.monotonic() + 3600), "/users/" + SENDER, plan), example
            )

    return run


def _token_target(discovery_phase: bool) -> Callable[[Findings], Callable[[], None]]:
    """Token answers through msal. ``discovery_phase``: the fuzzed answer is the OpenID discovery document
    msal fetches when the app is built (a fresh authority each example); else the token endpoint's answer."""

    def factory(count: Findings) -> Callable[[], None]:
        session = ScriptedSession()

        def discovery(base: str) -> bytes:
            return json.dumps(
                {
                    "authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/{TENANT}/oauth2/v2.0/token",
                    "issuer": f"{base}/{TENANT}/v2.0",
                }
            ).encode()

        def fallback(method: str, url: str) -> Any:
            if method == "GET" and "openid-configuration" in url:
                return (200, {"Content-Type": "application/json"}, discovery(url.split("/" + TENANT)[0]))
            return (400, {"Content-Type": "application/json"}, b'{"error": "invalid_grant"}')

        session.fallback = fallback
        transport = Transport(session=session, timeouts=Timeouts(total=3600), sleep=lambda seconds: None)
        serial = itertools.count()

        def provider_for(base: str) -> TokenProvider:
            credentials = MailboxCredentials(
                tenant_id=TENANT,
                client_id=CLIENT,
                client_secret="fuzz-secret",
                cloud=resolve_cloud("global", base, base + "/v1.0"),
                refresh_token=f"fuzz-refresh-{next(serial)}",
            )
            return TokenProvider(credentials, transport=transport)

        if not discovery_phase:
            try:  # build (and cache) the msal app once, with a sound discovery document
                provider_for(BASE).token()
            except GraphMailError:
                pass
        token_bodies = st.one_of(
            graph_error_bodies,
            st.fixed_dictionaries(
                {},
                optional={
                    "access_token": json_values,
                    "refresh_token": json_values,
                    "expires_in": st.one_of(json_values, st.sampled_from(["3600", "abc", "1e999", -5])),
                    "token_type": json_values,
                    "scope": json_values,
                    "id_token": st.one_of(json_values, st.sampled_from(["a.b.c", "eyJ.eyJ.x", ""])),
                    "client_info": st.one_of(json_values, st.sampled_from(["e30", "!!", "eyJ1aWQiOjF9"])),
                    "error": json_values,
                    "error_description": json_values,
                    "error_codes": json_values,
                    "authorization_endpoint": json_values,
                    "token_endpoint": json_values,
                },
            ).map(lambda v: json.dumps(v).encode()),
        )

        @given(
            status=st.sampled_from([200, 200, 400, 401, 429, 500, 503]),
            headers=response_headers,
            body=token_bodies,
            failure=st.one_of(st.none(), st.none(), transport_failures),
        )
        def run(status, headers, body, failure):
            count.n += 1
            base = f"http://127.0.0.1:{20000 + count.n}" if discovery_phase else BASE
            answer = failure if failure is not None else (status, headers, body)
            session.script = [answer]
            provider = provider_for(base)
            count.guarded(provider.token, lambda: f"answer={answer!r}")

        return run

    return factory


TARGETS: List[Tuple[str, Callable[[Findings], Callable[[], None]], float]] = [
    ("message conversion (build_plan on fuzzed MIME)", target_message, 0.25),
    ("Graph error answers (status, headers, body, Retry-After)", target_graph_answers, 0.2),
    ("identity platform error answers", target_token_answers, 0.1),
    ("client over HTTP (sendMail, draft, upload answers)", target_client, 0.3),
    ("token endpoint answers through msal", _token_target(False), 0.1),
    ("OpenID discovery answers through msal", _token_target(True), 0.05),
]


def run_section(
    total: int = 10_000, progress: Callable[[str], None] = print, fuzz_seed: Optional[int] = 6
) -> SectionResult:
    """``fuzz_seed``: the same examples every run (a stable report); None explores new ones each run."""
    result = SectionResult()
    examples = escapes = 0
    clear_caches()
    logging.disable(logging.CRITICAL)  # the core logs every refused call: millions of lines otherwise
    for name, factory, weight in TARGETS:
        wanted = max(1, round(total * weight))
        count = Findings()
        started = time.monotonic()
        test = factory(count)
        configured = settings(
            max_examples=wanted,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )(test)
        if fuzz_seed is not None:
            configured = seed(fuzz_seed)(configured)
        try:
            configured()
        except Exception as error:  # the harness itself broke
            count.record(error, lambda: "harness")
        if count.escapes:
            observed = f"{count.n} examples; ESCAPED, {len(count.escapes)} distinct: {count.describe()}"
        else:
            observed = f"{count.n} examples, nothing escaped the GraphMailError tree"
        ok = not count.escapes and count.n >= wanted
        examples += count.n
        escapes += len(count.escapes)
        result.checks.append(Check(SECTION, name, f"only GraphMailError, {wanted} examples", observed, ok))
        progress(f"    {'ok ' if ok else 'RED'} {name}: {count.n} examples ({time.monotonic() - started:.0f} s)")
    result.figures = {"fuzz_examples": examples, "fuzz_target": total, "fuzz_escapes": escapes}
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.fuzzing")
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    parser.add_argument("--seed", default="6", help="hypothesis seed (default 6: a stable report), or 'random'")
    args = parser.parse_args(argv)
    progress = (lambda text: print(text, file=sys.stderr, flush=True)) if args.json else print
    result = run_section(args.examples, progress, None if args.seed == "random" else int(args.seed))
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in result.checks], "figures": result.figures}))
    else:
        for check in result.checks:
            print(f"{'ok ' if check.ok else 'RED'} {check.name}: {check.observed}")
    return 0 if all(c.ok for c in result.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
