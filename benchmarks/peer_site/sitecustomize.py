"""Loaded by Python at start-up in the peer addon's Odoo processes only (this folder is put on PYTHONPATH by
benchmarks/run.py). The peer writes Microsoft's hosts as literals in its code and has no setting for them, so
its requests to login.microsoftonline.com and graph.microsoft.com are sent to the fake Microsoft named by
MAIL_GRAPH_BENCH_FAKE_URL instead.

With MAIL_GRAPH_BENCH_PEER_COERCE=1 (the throughput runs, after its mails were measured as they are) the
string ``"saveToSentItems": "true"`` it sends is turned into the boolean Graph's schema wants, so its
sending cost can be measured at all. Nothing else changes."""

from __future__ import annotations

import os

_FAKE = os.environ.get("MAIL_GRAPH_BENCH_FAKE_URL", "").rstrip("/")
_COERCE = os.environ.get("MAIL_GRAPH_BENCH_PEER_COERCE") == "1"
_HOSTS = ("https://login.microsoftonline.com", "https://graph.microsoft.com")

if _FAKE:
    import requests

    _original = requests.Session.request

    def _request(self, method, url, *args, **kwargs):
        if isinstance(url, str):
            for host in _HOSTS:
                if url.startswith(host):
                    url = _FAKE + url[len(host) :]
                    break
        payload = kwargs.get("json")
        if _COERCE and isinstance(payload, dict) and isinstance(payload.get("saveToSentItems"), str):
            kwargs["json"] = dict(payload, saveToSentItems=payload["saveToSentItems"].lower() == "true")
        return _original(self, method, url, *args, **kwargs)

    requests.Session.request = _request
