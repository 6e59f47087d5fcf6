from __future__ import annotations

import logging

import pytest

from graph_mail import RedactingFilter, install_log_redaction, redact, register_secret

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        ("Authorization: Bearer opaque-token-123", "opaque-token-123"),
        ("POST grant_type=authorization_code&code=0.AAAAsecretcode&redirect_uri=x", "0.AAAAsecretcode"),
        ("client_secret=s3cr3t~value&client_id=abc", "s3cr3t~value"),
        ("refresh_token=1.ARrefresh&scope=Mail.Send", "1.ARrefresh"),
        ("client_assertion=abc.def.ghi&client_assertion_type=x", "abc.def.ghi"),
        ("PUT /upload/s1?tempauth=v1.opaque HTTP/1.1", "v1.opaque"),
        ("GET /AttachmentSessions('x')?authtoken=opaqueTok", "opaqueTok"),
        ('{"access_token": "at-value", "token_type": "Bearer"}', "at-value"),
        ("{'refresh_token': 'rt-value', 'x': 1}", "rt-value"),
        (f"id token {JWT} in a sentence", JWT),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----", "MIIEvQIBADANBg"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEtruncated", "MIIEtruncated"),
        ("code%3D0.AAAencoded", "0.AAAencoded"),
    ],
)
def test_patterns(text, leak):
    out = redact(text)
    assert leak not in out
    assert "REDACTED" in out


def test_public_values_survive():
    text = '{"error": {"code": "ErrorAccessDenied"}} client_id=2f9b request-id: 1234 error_code=5'
    assert redact(text) == text


def test_registered_secrets_are_redacted_in_every_form():
    register_secret("opaque~secret+value/1")
    out = redact("a opaque~secret+value/1 b opaque~secret%2Bvalue%2F1 c opaque%7Esecret%2Bvalue%2F1")
    assert "secret" not in out.replace("REDACTED", "")


def test_short_values_are_not_registered():
    register_secret("abc", None, "")
    assert redact("abc") == "abc"


def test_filter_rewrites_message_args_and_traceback(caplog):
    logger = logging.getLogger("graph_mail.test_redaction")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.DEBUG, logger="graph_mail.test_redaction"):
            logger.debug("token %s", JWT)
            try:
                raise ValueError(f"boom refresh_token=rt-leak {JWT}")
            except ValueError:
                logger.exception("failed")
        text = caplog.text + "".join(r.getMessage() for r in caplog.records)
        assert JWT not in text and "rt-leak" not in text
        assert "failed" in caplog.text and "boom" in caplog.text
    finally:
        logger.filters.clear()


def test_install_covers_child_loggers_of_msal_and_urllib3(caplog):
    logging.getLogger("urllib3.connectionpool")
    logging.getLogger("msal.application")
    install_log_redaction()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("urllib3.connectionpool").debug('"PUT /upload/x?tempauth=abcdef HTTP/1.1" 200 0')
        logging.getLogger("msal.application").debug("Bearer abcdefgh")
    assert "abcdef " not in caplog.text and "tempauth=[REDACTED]" in caplog.text
    assert "abcdefgh" not in caplog.text
