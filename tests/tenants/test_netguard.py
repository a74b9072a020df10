"""SSRF defence: tenant base URLs may not point inside the operator's network."""

from __future__ import annotations

import ipaddress
import re

import pytest

from gateway_project.common.netguard import UnsafeUpstreamError, validate_base_url


@pytest.fixture(autouse=True)
def no_private_networks(settings):
    settings.GATEWAY_PRIVATE_UPSTREAMS = []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://localhost/v1",
        "http://10.0.0.5/v1",
        "http://192.168.1.1/v1",
        "http://172.16.0.1/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/v1",
        "http://[fd00::1]/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://[64:ff9b::a9fe:a9fe]/latest",
        "http://[2002:a9fe:a9fe::1]/latest",
        "http://[::127.0.0.1]/v1",
        "http://0.0.0.0/v1",
        "ftp://example.com/v1",
        "http://user:pass@example.com/v1",
    ],
)
def test_private_loopback_and_metadata_addresses_are_refused(url):
    with pytest.raises(UnsafeUpstreamError):
        validate_base_url(url)


def test_the_operator_can_allow_a_network(settings):
    settings.GATEWAY_PRIVATE_UPSTREAMS = [ipaddress.ip_network("10.0.0.0/8")]
    validate_base_url("http://10.0.0.5/v1")
    with pytest.raises(UnsafeUpstreamError):
        validate_base_url("http://192.168.1.1/v1")


def test_metadata_stays_refused_even_when_its_network_is_allowed(settings):
    settings.GATEWAY_PRIVATE_UPSTREAMS = [ipaddress.ip_network("169.254.0.0/16")]
    with pytest.raises(UnsafeUpstreamError):
        validate_base_url("http://169.254.169.254/")


def test_a_hostname_resolving_to_a_private_address_is_refused(monkeypatch):
    import socket

    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", 443))]
    )
    with pytest.raises(UnsafeUpstreamError, match=r"10\.9\.8\.7"):
        validate_base_url("https://internal.example.com/v1")


def test_public_addresses_pass():
    validate_base_url("https://104.18.7.192/v1")


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://127.0.0.1:11434/v1", "GATEWAY_PRIVATE_UPSTREAMS=127.0.0.0/8 to allow local model servers"),
        ("http://localhost:8000/v1", "GATEWAY_PRIVATE_UPSTREAMS=127.0.0.0/8 to allow local model servers"),
        ("http://[::1]:8000/v1", "GATEWAY_PRIVATE_UPSTREAMS=::1/128 to allow local model servers"),
        ("http://192.168.1.20/v1", "GATEWAY_PRIVATE_UPSTREAMS=192.168.0.0/16 to allow model servers on your network"),
    ],
)
def test_the_refusal_says_which_setting_allows_the_address(url, allow):
    with pytest.raises(UnsafeUpstreamError, match=re.escape(allow)):
        validate_base_url(url)


def test_the_metadata_refusal_offers_no_setting():
    with pytest.raises(UnsafeUpstreamError, match="cloud metadata address, which is never allowed") as exc:
        validate_base_url("http://169.254.169.254/latest")
    assert "GATEWAY_PRIVATE_UPSTREAMS" not in str(exc.value)
