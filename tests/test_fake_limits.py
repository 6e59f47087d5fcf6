"""Exchange Online's and Graph's limits on the fake, driven by its own clock: concurrency per app and mailbox,
the message rate (Outbox delay), the rolling day's recipients (NDR 5.1.90), credential expiry, and the app's
own registration (``/applications``)."""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import threading
import time
from email.message import EmailMessage
from typing import Any, Dict, List

import msal
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization

from fake_microsoft import DEFAULTS, FakeControl
from fake_microsoft.testing import (
    app_token,
    assert_graph_error,
    delegated_token,
    self_signed_certificate,
    token_request,
)

ADMIN = "admin@contoso.onmicrosoft.com"
SALES = "sales@contoso.onmicrosoft.com"
CLIENT = DEFAULTS["client_id"]
TENANT = DEFAULTS["tenant_id"]
APP = f"/applications(appId='{CLIENT}')"


def graph(fake, method: str, path: str, token=None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, fake.graph_url + path, headers=headers, timeout=10, **kwargs)


def mime(subject: str, to: str = "bob@example.com", sender: str = ADMIN, bcc: str = "") -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if bcc:
        message["Bcc"] = bcc
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@odoo.example.com>"
    message.set_content("hello")
    return message.as_bytes()


def send(fake, token: str, raw: bytes, mailbox: str = "/me") -> requests.Response:
    return graph(
        fake, "POST", f"{mailbox}/sendMail", token, data=base64.b64encode(raw), headers={"Content-Type": "text/plain"}
    )


def secret_grant() -> Dict[str, str]:
    return {
        "client_id": CLIENT,
        "client_secret": DEFAULTS["client_secret"],
        "grant_type": "client_credentials",
        "scope": "https://graph.microsoft.com/.default",
    }


def iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the clock -------------------------------------------------------------------------------------------


def test_clock_advances_over_python_and_http_and_reset_restores_it(fake):
    assert abs(fake.now() - time.time()) < 5
    moved = fake.advance_clock(3600)
    assert abs(moved - (time.time() + 3600)) < 5
    control = FakeControl(fake.url)
    assert abs(control.now() - moved) < 5
    assert abs(control.advance_clock(60) - (moved + 60)) < 5
    answer = requests.post(fake.control_url + "/clock", json={"advance": 0.5}, timeout=10)
    assert answer.status_code == 200 and answer.json()["now"] > moved + 60
    assert requests.get(fake.control_url + "/clock", timeout=10).json()["now"] >= moved + 60
    for bad in (-1, "soon", None, True):
        answer = requests.post(fake.control_url + "/clock", json={"advance": bad}, timeout=10)
        assert answer.status_code == 400, bad
    with pytest.raises(ValueError):
        control.advance_clock(-5)
    fake.reset()
    assert abs(fake.now() - time.time()) < 5


def test_tokens_and_stamps_follow_the_clock(fake):
    token = app_token(fake.url)
    assert graph(fake, "GET", f"/users/{ADMIN}", token).status_code == 200
    fake.advance_clock(DEFAULTS["token_lifetime"] + 1)
    error = assert_graph_error(graph(fake, "GET", f"/users/{ADMIN}", token), 401, "InvalidAuthenticationToken")
    assert error["message"] == "Lifetime validation failed, the token is expired."
    year = time.gmtime(fake.advance_clock(400 * 24 * 3600)).tm_year
    assert year > time.gmtime().tm_year
    answer = graph(fake, "GET", f"/users/{ADMIN}", token)
    assert answer.json()["error"]["innerError"]["date"].startswith(str(year))
    assert str(year) in answer.headers["Date"]
    assert fake.calls()[-1]["at"] > time.time() + 365 * 24 * 3600


# --- concurrent requests per app and mailbox ------------------------------------------------------------


def run_together(count: int, request) -> List[requests.Response]:
    """``count`` requests started at the same instant from their own threads (and connections)."""
    barrier = threading.Barrier(count)
    answers: List[Any] = [None] * count

    def worker(i: int) -> None:
        barrier.wait()
        answers[i] = request(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_fifth_concurrent_request_on_a_mailbox_is_429(fake):
    token = delegated_token(fake.url)
    fake.inject("sendMail", delay=1.5, count=5)  # keeps each admitted call in flight
    answers = run_together(5, lambda i: send(fake, token, mime(f"c{i}")))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202, 202, 202, 202, 429]
    refused = next(a for a in answers if a.status_code == 429)
    error = assert_graph_error(refused, 429, "ApplicationThrottled")
    assert error["message"] == "Application is over its MailboxConcurrency limit."
    assert refused.headers["Retry-After"] == "1"
    assert len(fake.messages()) == 4  # the refused one was not processed
    logged = [c for c in fake.calls("sendMail") if c["status"] == 429]
    assert len(logged) == 1 and logged[0]["code"] == "ApplicationThrottled" and logged[0]["fault"] is None
    assert [f["remaining"] for f in fake.faults()] == [1]  # the refused call took no fault
    assert fake.state.in_flight == {}  # every slot given back
    assert send(fake, token, mime("after")).status_code == 202


def test_concurrency_counts_per_mailbox_and_reads_count_too(fake):
    token = app_token(fake.url)
    fake.inject("*", delay=1.5, count=5)
    targets = [ADMIN, ADMIN, ADMIN, ADMIN, SALES]  # four on one mailbox, one on another: all fit
    answers = run_together(5, lambda i: graph(fake, "GET", f"/users/{targets[i]}/mailFolders", token))
    assert [a.status_code for a in answers] == [200] * 5
    fake.inject("*", delay=1.5, count=5)
    mixed = run_together(
        5,
        lambda i: (
            send(fake, token, mime(f"m{i}"), f"/users/{ADMIN}")
            if i % 2
            else graph(fake, "GET", f"/users/{ADMIN}/mailFolders/inbox/messages/delta", token)
        ),
    )
    statuses = [a.status_code for a in mixed]
    assert statuses.count(429) == 1 and set(statuses) - {429} <= {200, 202}


def test_concurrency_limit_is_configurable_and_zero_lifts_it(fake):
    token = delegated_token(fake.url)
    fake.configure(mailbox_concurrency=1)
    fake.inject("sendMail", delay=1.0, count=2)
    assert sorted(a.status_code for a in run_together(2, lambda i: send(fake, token, mime(f"a{i}")))) == [202, 429]
    fake.clear_faults()
    fake.configure(mailbox_concurrency=0)
    fake.inject("sendMail", delay=1.0, count=6)
    assert [a.status_code for a in run_together(6, lambda i: send(fake, token, mime(f"b{i}")))] == [202] * 6


def test_requests_refused_before_exchange_are_not_counted(fake):
    # A bad token is Graph's front door's 401; /users/{id} itself is the directory, not a mailbox.
    fake.configure(mailbox_concurrency=1)
    fake.inject("*", delay=1.0, count=3)
    token = app_token(fake.url)
    answers = run_together(
        3,
        lambda i: [
            lambda: send(fake, "not-a-token", mime("x")),
            lambda: graph(fake, "GET", f"/users/{ADMIN}", token),
            lambda: send(fake, token, mime("y"), f"/users/{ADMIN}"),
        ][i](),
    )
    assert [a.status_code for a in answers] == [401, 200, 202]


# --- message rate: the surplus waits in the Outbox --------------------------------------------------------


def test_message_rate_delays_the_surplus_and_still_answers_202(fake):
    token = delegated_token(fake.url)
    assert DEFAULTS["message_rate_limit"] == 30
    assert [send(fake, token, mime(f"r{i}")).status_code for i in range(35)] == [202] * 35
    records = fake.messages()
    assert not any(r["delayed"] for r in records[:30])
    for i in range(30, 35):
        assert records[i]["delayed"] is True
        # Leaves one minute after the message 30 places ahead of it: at most 30 in any rolling minute.
        assert records[i]["delivered_at"] == pytest.approx(records[i - 30]["delivered_at"] + 60)
    departures = sorted(r["delivered_at"] for r in records)
    assert all(
        sum(1 for d in departures if start <= d < start + 60) <= 30 for start in departures
    )  # the rolling window holds
    # Queued behind the others: a new message now waits too, then the queue drains as the clock moves.
    late = send(fake, token, mime("queued"))
    assert late.status_code == 202 and fake.messages()[-1]["delayed"] is True
    fake.advance_clock(120)
    assert send(fake, token, mime("later")).status_code == 202
    last = fake.messages()[-1]
    assert last["delayed"] is False
    assert last["delivered_at"] == pytest.approx(fake.now(), abs=5)


def test_message_rate_is_per_mailbox_and_configurable(fake):
    token = app_token(fake.url)
    fake.configure(message_rate_limit=2)
    for mailbox in (ADMIN, ADMIN, ADMIN, SALES):
        assert send(fake, token, mime(f"to-{mailbox}", sender=mailbox), f"/users/{mailbox}").status_code == 202
    assert [m["delayed"] for m in fake.messages()] == [False, False, True, False]
    fake.configure(message_rate_limit=0)
    for i in range(5):
        send(fake, token, mime(f"free{i}"), f"/users/{ADMIN}")
    assert not any(m["delayed"] for m in fake.messages()[4:])


# --- recipients a day: past the limit, an NDR 5.1.90 ---------------------------------------------------------


def test_daily_recipient_limit_refuses_the_whole_message_with_an_ndr(fake):
    token = delegated_token(fake.url)
    assert DEFAULTS["daily_recipient_limit"] == 10000
    fake.configure(daily_recipient_limit=5)
    assert send(fake, token, mime("first", to="a@x.example, b@x.example", bcc="c@x.example")).status_code == 202
    over = mime("second", to="d@x.example, e@x.example", bcc="f@x.example")
    assert send(fake, token, over).status_code == 202  # Graph still accepts it
    first, second = fake.messages()
    assert first["ndr"] is None and first["refused"] == [] and first["delivered_at"] is not None
    assert second["ndr"] == "5.1.90" and second["delivered_at"] is None and second["delayed"] is False
    assert second["refused"] == ["d@x.example", "e@x.example", "f@x.example"]  # the whole message, Bcc included
    inbox = fake.mailbox_messages(ADMIN, "inbox")
    assert [m["subject"] for m in inbox] == ["Undeliverable: second"]
    raw = graph(fake, "GET", f"/me/messages/{inbox[0]['id']}/$value", token).content
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report["In-Reply-To"] == "<second@odoo.example.com>"
    human, status, original = report.get_payload()
    text = human.get_payload()[0].get_content()
    assert "Your message wasn't delivered because you've exceeded your sending limit." in text
    assert text.count("daily limit for message recipients") == 1
    blocks = status.get_payload()
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822;d@x.example",
        "rfc822;e@x.example",
        "rfc822;f@x.example",
    ]
    assert {b["Status"] for b in blocks[1:]} == {"5.1.90"}
    assert all(b["Diagnostic-Code"].startswith("smtp;550 5.1.90 ") for b in blocks[1:])
    assert original.get_payload()[0]["Message-Id"] == "<second@odoo.example.com>"
    # Only delivered recipients count: two more still fit, a third does not.
    assert send(fake, token, mime("third", to="g@x.example, h@x.example")).status_code == 202
    assert fake.messages()[-1]["ndr"] is None
    send(fake, token, mime("fourth", to="i@x.example"))
    assert fake.messages()[-1]["ndr"] == "5.1.90"
    # A rolling 24 hours: a day later the count starts again.
    fake.advance_clock(24 * 3600 + 1)
    token = delegated_token(fake.url)  # the old one expired meanwhile
    send(fake, token, mime("next day", to="j@x.example, k@x.example, l@x.example, m@x.example, n@x.example"))
    assert fake.messages()[-1]["ndr"] is None
    assert len(fake.mailbox_messages(ADMIN, "inbox")) == 2


def test_daily_limit_counts_per_mailbox_and_zero_lifts_it(fake):
    token = app_token(fake.url)
    fake.configure(daily_recipient_limit=1)
    send(fake, token, mime("a", sender=ADMIN), f"/users/{ADMIN}")
    send(fake, token, mime("b", sender=SALES), f"/users/{SALES}")
    send(fake, token, mime("c", sender=ADMIN), f"/users/{ADMIN}")
    assert [m["ndr"] for m in fake.messages()] == [None, None, "5.1.90"]
    fake.configure(daily_recipient_limit=0)
    send(fake, token, mime("d", to="x@y.example, z@y.example", sender=ADMIN), f"/users/{ADMIN}")
    assert fake.messages()[-1]["ndr"] is None


# --- credential expiry ---------------------------------------------------------------------------------------


def loopback_msal(fake, credential) -> msal.ConfidentialClientApplication:
    class Loopback(requests.Session):
        def request(self, method, url, *args, **kwargs):
            url = url.replace(f"https://127.0.0.1:{fake.port}", fake.url)
            return super().request(method, url, *args, **kwargs)

    return msal.ConfidentialClientApplication(
        CLIENT,
        client_credential=credential,
        authority=f"https://127.0.0.1:{fake.port}/{TENANT}",
        http_client=Loopback(),
        instance_discovery=False,
    )


@pytest.mark.parametrize("as_text", [False, True])
def test_secret_expires_at_its_date_on_the_fake_clock(fake, as_text):
    end = fake.now() + 30 * 24 * 3600
    fake.configure(client_secret_expires=iso(end) if as_text else end)
    status, _ = token_request(fake.url, secret_grant())
    assert status == 200
    fake.advance_clock(30 * 24 * 3600 + 5)
    status, answer = token_request(fake.url, secret_grant())
    assert status == 401 and answer["error"] == "invalid_client" and answer["error_codes"] == [7000222]
    assert answer["error_description"].startswith(f"AADSTS7000222: The provided client secret keys for app '{CLIENT}'")
    # msal sees the same (a fresh app: nothing cached).
    result = loopback_msal(fake, DEFAULTS["client_secret"]).acquire_token_for_client(
        ["https://graph.microsoft.com/.default"]
    )
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000222]
    # A wrong secret is still 7000215 first; the flag keeps working alone.
    assert token_request(fake.url, {**secret_grant(), "client_secret": "wrong"})[1]["error_codes"] == [7000215]
    fake.reset()
    fake.configure(client_secret_expired=True)
    assert token_request(fake.url, secret_grant())[1]["error_codes"] == [7000222]


def test_secret_expiry_config_is_validated_and_read_in_utc(fake):
    for good in (None, 0, 1767225600, "2026-01-01", "2026-01-01T10:00:00Z", "2026-01-01T10:00:00.1234567+02:00"):
        fake.configure(client_secret_expires=good)
    for bad in ("tomorrow", "2026-13-01", [], True):
        with pytest.raises(ValueError):
            fake.configure(client_secret_expires=bad)
    fake.configure(client_secret_expires="2020-01-01T12:00:00+02:00", app_roles=["Application.Read.All"])
    assert token_request(fake.url, secret_grant())[1]["error_codes"] == [7000222]
    fake.configure(app_roles=["Application.Read.All"], client_secret_expires=fake.now() + 3600)
    token = app_token(fake.url)
    fake.configure(client_secret_expires="2020-01-01T12:00:00+02:00")
    (secret,) = graph(fake, "GET", APP, token).json()["passwordCredentials"]
    assert secret["endDateTime"] == "2020-01-01T10:00:00Z"
    assert secret["startDateTime"] == "2018-01-01T10:00:00Z"  # two years before an end older than the fake


def certificate_pair(days: int = 30):
    key, cert = self_signed_certificate("odoo-graph-expiry")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert, cert_pem, key_pem


def cert_moment(cert, name: str) -> str:
    """A certificate date as Graph writes it (``*_utc`` from cryptography 42, naive UTC before)."""
    moment = getattr(cert, name + "_utc", None) or getattr(cert, name)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_expired_certificate_is_700027_the_key_used_is_expired(fake):
    cert, cert_pem, key_pem = certificate_pair()
    fake.configure(certificates=[cert_pem])
    thumbprint = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303
    credential = {"private_key": key_pem, "thumbprint": thumbprint}
    scopes = ["https://graph.microsoft.com/.default"]
    assert "access_token" in loopback_msal(fake, credential).acquire_token_for_client(scopes)
    fake.advance_clock(31 * 24 * 3600)  # the certificate was made valid for 30 days
    result = loopback_msal(fake, credential).acquire_token_for_client(scopes)
    assert result["error"] == "invalid_client" and result["error_codes"] == [700027]
    description = result["error_description"]
    assert description.startswith(
        "AADSTS700027: Client assertion contains an invalid signature. [Reason - The key used is expired."
    )
    assert f"Thumbprint of key used by client: '{thumbprint.upper()}'" in description
    assert "Found key 'Start=" in description and f"app Id '{CLIENT}'" in description


# --- the app's own registration --------------------------------------------------------------------------------


def test_application_read_needs_application_read_all(fake):
    token = app_token(fake.url)
    assert "Application.Read.All" not in DEFAULTS["app_roles"] + DEFAULTS["delegated_scopes"]
    for path in (APP, "/applications?$filter=appId eq '" + CLIENT + "'"):
        error = assert_graph_error(graph(fake, "GET", path, token), 403, "Authorization_RequestDenied")
        assert error["message"] == "Insufficient privileges to complete the operation."
        assert error["innerError"]["client-request-id"]
    assert_graph_error(graph(fake, "GET", APP), 401, "InvalidAuthenticationToken")
    assert_graph_error(graph(fake, "GET", APP, delegated_token(fake.url)), 403, "Authorization_RequestDenied")


def test_application_resource_shows_secret_and_certificates(fake):
    cert, cert_pem, _ = certificate_pair()
    end = fake.now() + 100 * 24 * 3600
    fake.configure(app_roles=[*DEFAULTS["app_roles"], "Application.Read.All"], certificates=[cert_pem],
                   client_secret_expires=end)  # fmt: skip
    token = app_token(fake.url)
    answer = graph(fake, "GET", APP, token)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["@odata.context"].endswith("/v1.0/$metadata#applications/$entity")
    assert body["appId"] == CLIENT and body["displayName"] == DEFAULTS["client_name"] and body["id"]
    (secret,) = body["passwordCredentials"]
    assert secret == {
        "customKeyIdentifier": None,
        "displayName": secret["displayName"],
        "endDateTime": iso(end),
        "hint": DEFAULTS["client_secret"][:3],
        "keyId": DEFAULTS["client_secret_id"],
        "secretText": None,
        "startDateTime": secret["startDateTime"],
    }
    assert secret["startDateTime"] < secret["endDateTime"]
    (key,) = body["keyCredentials"]
    assert key["customKeyIdentifier"] == cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
    assert key["endDateTime"] == cert_moment(cert, "not_valid_after")
    assert key["startDateTime"] == cert_moment(cert, "not_valid_before")
    assert (key["type"], key["usage"], key["key"]) == ("AsymmetricX509Cert", "Verify", None)
    assert key["displayName"] == "CN=odoo-graph-expiry" and key["keyId"]
    # $select: only those properties; the certificate's key itself comes with $select=keyCredentials.
    selected = graph(fake, "GET", APP + "?$select=passwordCredentials,keyCredentials,appId", token).json()
    assert set(selected) == {"@odata.context", "passwordCredentials", "keyCredentials", "appId"}
    assert selected["@odata.context"].endswith("#applications(passwordCredentials,keyCredentials,appId)/$entity")
    assert base64.b64decode(selected["keyCredentials"][0]["key"]) == cert.public_bytes(serialization.Encoding.DER)
    # By object id, and through $filter on appId (a list).
    assert graph(fake, "GET", f"/applications/{body['id']}", token).json()["appId"] == CLIENT
    listed = graph(fake, "GET", f"/applications?$filter=appId eq '{CLIENT}'&$select=appId", token).json()
    assert listed["value"] == [{"appId": CLIENT}]
    assert graph(fake, "GET", "/applications?$filter=appId eq 'other'", token).json()["value"] == []
    assert_graph_error(graph(fake, "GET", "/applications?$filter=displayName eq 'x'", token), 400,
                       "Request_UnsupportedQuery")  # fmt: skip
    assert_graph_error(graph(fake, "GET", APP + "?$select=nope", token), 400, "Request_BadRequest")
    assert_graph_error(graph(fake, "GET", "/applications(appId='00000000-0000-0000-0000-000000000000')", token),
                       404, "Request_ResourceNotFound")  # fmt: skip
    assert {c["route"] for c in fake.calls() if c["path"].startswith("/v1.0/applications")} == {
        "getApplication",
        "listApplications",
    }


def test_application_secret_dates_without_an_expiry_date(fake):
    fake.configure(app_roles=["Application.Read.All"])
    token = app_token(fake.url)
    (secret,) = graph(fake, "GET", APP, token).json()["passwordCredentials"]
    two_years = fake.state.started_at + 2 * 365 * 24 * 3600
    assert secret["endDateTime"] == iso(two_years)
    fake.configure(client_secret_expired=True)
    (secret,) = graph(fake, "GET", APP, token).json()["passwordCredentials"]
    assert secret["endDateTime"] < iso(fake.now())


def test_application_read_with_a_delegated_scope(fake):
    fake.configure(delegated_scopes=[*DEFAULTS["delegated_scopes"], "Application.Read.All"])
    token = delegated_token(fake.url, scopes="Application.Read.All User.Read offline_access openid")
    answer = graph(fake, "GET", APP + "?$select=appId", token)
    assert answer.status_code == 200 and answer.json()["appId"] == CLIENT
