"""Microsoft clouds: the pair (identity host, Graph host) as one setting.

Overrides exist for tests, proxies and the fake Microsoft. Plain ``http://`` is accepted only for a loopback
host: tokens must never cross a network in clear text.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigurationError

GRAPH_VERSION = "v1.0"


@dataclass(frozen=True)
class Cloud:
    """Where to sign in and where Graph lives.

    ``authority_host_url`` has no tenant (the tenant is appended per mailbox); ``graph_url`` includes the
    API version (``https://graph.microsoft.com/v1.0``); ``graph_resource`` is the resource identifier used
    in scopes (``https://graph.microsoft.com``), which stays the cloud's even when ``graph_url`` is
    overridden.
    """

    name: str
    authority_host_url: str
    graph_url: str
    graph_resource: str

    @property
    def is_loopback(self) -> bool:
        return is_loopback_url(self.authority_host_url)

    def authority(self, tenant: str) -> str:
        return f"{self.authority_host_url}/{tenant.strip('/')}"

    def scope(self, name: str) -> str:
        """``Mail.Send`` qualified with this cloud's Graph resource (unqualified means global Graph)."""
        if "://" in name or self.name == "global":
            return name
        return f"{self.graph_resource}/{name}"

    @property
    def default_scope(self) -> str:
        return f"{self.graph_resource}/.default"


# name -> (authority host, graph host, graph resource)
CLOUDS: Dict[str, Tuple[str, str, str]] = {
    "global": (
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://graph.microsoft.com",
    ),
    "usgov": ("https://login.microsoftonline.us", "https://graph.microsoft.us", "https://graph.microsoft.us"),
    "usgov_dod": (
        "https://login.microsoftonline.us",
        "https://dod-graph.microsoft.us",
        "https://dod-graph.microsoft.us",
    ),
    "china": (
        "https://login.partner.microsoftonline.cn",
        "https://microsoftgraph.chinacloudapi.cn",
        "https://microsoftgraph.chinacloudapi.cn",
    ),
}


def is_loopback_host(host: Optional[str]) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname)


def check_url(url: str, what: str) -> str:
    """``url`` normalised (no trailing slash, no query); https anywhere, http only on loopback."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except (ValueError, AttributeError):
        raise ConfigurationError(f"{what} is not a valid URL: {url!r}")
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigurationError(f"{what} must be an https:// URL, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigurationError(
            f"{what} uses plain http to a non-loopback host: {url!r}",
            hint="Use https://; plain http is only allowed to 127.0.0.1/localhost (tests, the fake).",
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{what} must not have a query or fragment: {url!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def resolve_cloud(
    name: str = "global",
    authority_url: Optional[str] = None,
    graph_url: Optional[str] = None,
) -> Cloud:
    """The named cloud, with optional overrides of its identity host and Graph URL.

    ``graph_url`` may be given with or without the API version; ``/v1.0`` is appended when absent.
    """
    key = (name or "global").lower().replace("-", "_")
    if key not in CLOUDS:
        raise ConfigurationError(f"Unknown cloud {name!r}", hint="Use one of: " + ", ".join(sorted(CLOUDS)) + ".")
    authority_host, graph_host, resource = CLOUDS[key]
    authority = check_url(authority_url or authority_host, "Authority URL")
    graph = check_url(graph_url or graph_host, "Graph URL")
    last = graph.rsplit("/", 1)[-1]
    if last not in ("v1.0", "beta"):
        graph = f"{graph}/{GRAPH_VERSION}"
    return Cloud(name=key, authority_host_url=authority, graph_url=graph, graph_resource=resource)
