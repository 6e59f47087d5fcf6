"""Minimal JWT helpers: the fake's own RS256 signing key, and verification of client assertions.

Tokens the fake issues are real RS256 JWTs (keys published at the jwks_uri) so clients that decode them
work; the fake itself trusts only its own token store, never a token's claims.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import threading
from typing import Any, Dict, List, Optional, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_ID = "fake-microsoft-signing-key"
_key_lock = threading.Lock()
_signing_key: Optional[rsa.RSAPrivateKey] = None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key() -> rsa.RSAPrivateKey:
    """One key per process: generating RSA keys costs ~0.1 s, too much per test."""
    global _signing_key
    with _key_lock:
        if _signing_key is None:
            _signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _signing_key


def encode(claims: Dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": KEY_ID}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = signing_key().sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def jwks() -> Dict[str, Any]:
    numbers = signing_key().public_key().public_numbers()

    def as_b64(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"keys": [{"kty": "RSA", "use": "sig", "kid": KEY_ID, "alg": "RS256", "n": as_b64(numbers.n), "e": "AQAB"}]}


def split(token: str) -> Tuple[Dict[str, Any], Dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature); ValueError when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a JWT has three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JWT: {exc}")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT header and claims must be JSON objects")
    return header, claims, (parts[0] + "." + parts[1]).encode("ascii"), signature


class Certificate:
    """A registered certificate: its public key, validity and both thumbprints (x5t, x5t#S256)."""

    def __init__(self, pem: str) -> None:
        self.pem = pem
        self.cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        der = self.cert.public_bytes(serialization.Encoding.DER)
        self.der = der
        self.sha1 = hashlib.sha1(der).digest()  # noqa: S324 - x5t is defined as a SHA-1 thumbprint
        self.sha256 = hashlib.sha256(der).digest()

    @property
    def not_valid_after(self) -> float:
        moment = getattr(self.cert, "not_valid_after_utc", None)
        if moment is None:  # cryptography < 42
            return float(calendar.timegm(self.cert.not_valid_after.timetuple()))
        return moment.timestamp()

    @property
    def not_valid_before(self) -> float:
        moment = getattr(self.cert, "not_valid_before_utc", None)
        if moment is None:  # cryptography < 42
            return float(calendar.timegm(self.cert.not_valid_before.timetuple()))
        return moment.timestamp()

    @property
    def subject(self) -> str:
        """``CN=...``: what Entra ID shows as the certificate's description when it is uploaded."""
        return self.cert.subject.rfc4514_string()

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        public_key = self.cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            return False
        if alg == "RS256":
            pad: Any = padding.PKCS1v15()
        elif alg == "PS256":
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        else:
            return False
        try:
            public_key.verify(signature, signing_input, pad, hashes.SHA256())
        except InvalidSignature:
            if alg == "PS256":  # PyJWT signs PSS with the maximum salt length on some versions
                try:
                    public_key.verify(
                        signature,
                        signing_input,
                        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                        hashes.SHA256(),
                    )
                    return True
                except InvalidSignature:
                    return False
            return False
        return True


def find_certificate(header: Dict[str, Any], pems: List[str]) -> Tuple[Optional[Certificate], str]:
    """The registered certificate named by the assertion's x5t / x5t#S256 header, and the thumbprint."""
    wanted_sha256 = header.get("x5t#S256")
    wanted_sha1 = header.get("x5t")
    for pem in pems:
        cert = Certificate(pem)
        if isinstance(wanted_sha256, str) and b64url(cert.sha256) == wanted_sha256.rstrip("="):
            return cert, wanted_sha256
        if isinstance(wanted_sha1, str) and b64url(cert.sha1) == wanted_sha1.rstrip("="):
            return cert, wanted_sha1
    thumbprint = wanted_sha256 if isinstance(wanted_sha256, str) else wanted_sha1
    return None, str(thumbprint or "")
