"""SSRF guard: internal destinations are refused at creation and again at delivery time, unless allowlisted."""

from __future__ import annotations

import ipaddress
import time

import pytest

from otel_audit.store import Storage
from otel_audit.store.webhooks import DestinationError, DestinationGuard, forbidden_reason

from .conftest import tenant_api
from .helpers import NS, WebhookReceiver, login_event, wait_for

REFUSED = [
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/hook",
    "https://localhost/hook",
    "https://127.0.0.1:8443/hook",
    "https://[::1]/hook",
    "https://0.0.0.0/hook",
    "https://192.168.1.20/hook",
    "https://172.16.5.4/hook",
    "https://100.64.0.1/hook",
    "https://224.0.0.1/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[fe80::1]/hook",
    "https://240.0.0.1/hook",
]


@pytest.mark.parametrize("url", REFUSED)
def test_internal_destinations_are_refused_without_the_allowlist(url: str) -> None:
    with pytest.raises(DestinationError, match="refused unless the host is in the server's webhook allowlist"):
        DestinationGuard().check(url)


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/hook", "scheme must be https"),
    ("https://user:pass@93.184.215.14/hook", "credentials"),
    ("https:///hook", "missing host"),
    ("https://exa mple.com/", "no spaces"),
    ("http://93.184.215.14/hook", "must use https"),
    ("https://93.184.215.14:99999/", "malformed"),
    (42, "non-empty string"),
])
def test_malformed_or_plain_http_urls_are_refused(url: object, message: str) -> None:
    with pytest.raises(DestinationError, match=message):
        DestinationGuard().check(url)


def test_public_addresses_pass_and_the_allowlist_opens_hosts_and_networks() -> None:
    assert DestinationGuard().check("https://93.184.215.14/hook").address == "93.184.215.14"
    assert forbidden_reason(ipaddress.ip_address("2606:4700::1111")) is None
    assert DestinationGuard(["localhost"]).check("http://localhost:9/hook").address in ("127.0.0.1", "::1")
    assert DestinationGuard(["10.0.0.0/8"]).check("http://10.1.2.3/hook").address == "10.1.2.3"
    with pytest.raises(DestinationError):
        DestinationGuard(["10.0.0.0/8"]).check("https://169.254.169.254/")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_api_refuses_internal_destinations_naming_the_url(storage: Storage, serve) -> None:
    server = serve(storage, allow_hosts=())
    api = tenant_api(storage, server, "acme")
    for url in ("https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/hook", "https://localhost/hook",
                "http://127.0.0.1:9/hook"):
        response = api.http.post("/v1/webhooks", json={"url": url})
        assert response.status_code == 400, response.text
        assert response.json()["parameter"] == "url" and response.json()["error"] == "bad_destination"
    assert api.http.get("/v1/webhooks").json()["webhooks"] == []
    api.close()


def test_delivery_time_recheck_refuses_a_destination_no_longer_allowed(storage: Storage, serve) -> None:
    with WebhookReceiver() as receiver:
        first = serve(storage)
        api = tenant_api(storage, first, "acme")
        webhook = api.create_webhook(receiver.url)
        api.create_rule(webhook_ids=[webhook["id"]])
        api.close()
        first.__exit__()
        second = serve(storage, allow_hosts=(), max_attempts=2)
        api = tenant_api(storage, second, "acme")
        base = time.time_ns() - 600 * NS
        api.ingest([login_event() for _ in range(5)], [base + index for index in range(5)])
        failed = wait_for(lambda: api.deliveries(status="failed"), "the refused delivery")
        assert "destination refused" in failed[0]["last_error"] and "loopback" in failed[0]["last_error"]
        assert receiver.answered == []
        api.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_host_allowlisted_by_name_is_reached_on_whichever_address_listens(storage: Storage, serve) -> None:
    with WebhookReceiver() as receiver:
        server = serve(storage, allow_hosts=("localhost",))
        api = tenant_api(storage, server, "acme")
        webhook = api.create_webhook(f"http://localhost:{receiver.port}/hook")
        api.create_rule(webhook_ids=[webhook["id"]])
        base = time.time_ns() - 600 * NS
        api.ingest([login_event() for _ in range(5)], [base + index for index in range(5)])
        wait_for(lambda: api.deliveries(status="delivered"), "the delivery")
        headers = {name.lower(): value for name, value in receiver.received[0].headers.items()}
        assert headers["host"] == f"localhost:{receiver.port}"
        api.close()
