from __future__ import annotations

import pytest

from graph_mail import ConfigurationError, resolve_cloud
from graph_mail.clouds import check_url


@pytest.mark.parametrize(
    ("name", "authority", "graph"),
    [
        ("global", "https://login.microsoftonline.com", "https://graph.microsoft.com/v1.0"),
        ("usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us/v1.0"),
        ("usgov_dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us/v1.0"),
        ("china", "https://login.partner.microsoftonline.cn", "https://microsoftgraph.chinacloudapi.cn/v1.0"),
    ],
)
def test_named_clouds(name, authority, graph):
    cloud = resolve_cloud(name)
    assert cloud.authority_host_url == authority
    assert cloud.graph_url == graph
    assert cloud.authority("tenant-x") == f"{authority}/tenant-x"


def test_default_is_global_and_scopes_follow_the_cloud():
    assert resolve_cloud().name == "global"
    assert resolve_cloud().default_scope == "https://graph.microsoft.com/.default"
    assert resolve_cloud().scope("Mail.Send") == "Mail.Send"
    assert resolve_cloud("usgov").scope("Mail.Send") == "https://graph.microsoft.us/Mail.Send"
    assert resolve_cloud("usgov_dod").default_scope == "https://dod-graph.microsoft.us/.default"


def test_overrides_win_and_keep_the_cloud_resource():
    cloud = resolve_cloud("global", authority_url="http://127.0.0.1:8765/", graph_url="http://127.0.0.1:8765")
    assert cloud.authority_host_url == "http://127.0.0.1:8765"
    assert cloud.graph_url == "http://127.0.0.1:8765/v1.0"  # the version is appended when absent
    assert cloud.default_scope == "https://graph.microsoft.com/.default"
    assert resolve_cloud(graph_url="https://proxy.example.com/graph/v1.0").graph_url.endswith("/graph/v1.0")
    assert resolve_cloud(graph_url="https://graph.microsoft.com/beta").graph_url.endswith("/beta")


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://localhost:8069", "http://[::1]:80", "http://127.0.0.2"])
def test_plain_http_allowed_on_loopback(url):
    assert check_url(url, "x").startswith("http://")
    assert resolve_cloud(authority_url=url, graph_url=url).is_loopback


@pytest.mark.parametrize(
    "url", ["http://login.microsoftonline.com", "http://10.0.0.1:80", "http://example.com", "http://127.0.0.1.nip.io"]
)
def test_plain_http_refused_elsewhere(url):
    with pytest.raises(ConfigurationError, match="plain http"):
        resolve_cloud(authority_url=url)
    with pytest.raises(ConfigurationError):
        resolve_cloud(graph_url=url)


@pytest.mark.parametrize("url", ["ftp://x", "graph.microsoft.com", "https://", "https://x/?a=1"])
def test_malformed_urls_refused(url):
    with pytest.raises(ConfigurationError):
        check_url(url, "Graph URL")


def test_unknown_cloud_lists_the_choices():
    with pytest.raises(ConfigurationError) as info:
        resolve_cloud("mars")
    assert "usgov" in info.value.hint
