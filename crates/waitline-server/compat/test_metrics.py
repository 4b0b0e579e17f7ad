"""`GET /metrics` after a scripted scenario: the text parses with the Prometheus text-format
parser of `prometheus-client`, and the queue's gauges and counters have their exact values."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import API_KEY


def call(server, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server["base"] + path, data=data, method=method, headers={
        "Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10, context=server["ssl_context"]) as res:
        raw = res.read()
    return json.loads(raw) if raw else None


def dial(server) -> str:
    body = {"to": "+15550000000", "from": "+15550000001", "connection_id": "metrics"}
    return call(server, "POST", "/v2/calls", body)["data"]["call_control_id"]


def scrape(server, key: str | None = API_KEY) -> tuple[str, dict]:
    """The content type, and every sample as {(name, sorted labels): value}."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(server["base"] + "/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10, context=server["ssl_context"]) as res:
        kind, text = res.headers["Content-Type"], res.read().decode()
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return kind, {"samples": samples, "types": types}


def test_a_scripted_scenario_scrapes_to_exact_values(server):
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    callers = [dial(server) for _ in range(3)]
    for c in callers:
        call(server, "POST", f"/v2/calls/{c}/actions/enqueue", {"queue_name": queue})
    agent = dial(server)
    call(server, "POST", f"/v2/calls/{agent}/actions/bridge", {"queue": queue, "call_control_id": agent})
    call(server, "POST", f"/v2/calls/{callers[1]}/actions/hangup", {})

    kind, scraped = scrape(server)
    assert kind.startswith("text/plain; version=0.0.4")
    samples, types = scraped["samples"], scraped["types"]
    labels = (("queue", queue), ("tenant", "default"))

    def value(name: str, **extra) -> float:
        return samples[(name, tuple(sorted(dict(labels, **extra).items())))]

    assert types["waitline_queue_calls_waiting"] == "gauge"
    assert types["waitline_queue_enqueued"] == "counter"
    assert types["waitline_queue_wait_seconds"] == "histogram"
    assert value("waitline_queue_calls_waiting") == 1
    assert value("waitline_queue_enqueued_total") == 3
    assert [value("waitline_queue_dequeued_total", reason=r) for r in ("bridged", "hangup", "leave", "timeout")] \
        == [1, 1, 0, 0]
    assert value("waitline_queue_bridged_within_service_level_total") == 1
    assert value("waitline_queue_service_level_ratio") == 0.5
    assert value("waitline_queue_wait_seconds_count") == 2
    assert value("waitline_queue_wait_seconds_bucket", le="5") == 2
    assert value("waitline_queue_wait_seconds_bucket", le="+Inf") == 2
    assert samples[("waitline_tenant_queues", (("tenant", "default"),))] >= 1
    # A key sees its own tenant and nothing of the service's.
    assert not any(name.startswith("waitline_http_") for name, _ in samples)
    assert all(dict(lbl).get("tenant", "default") == "default" for _, lbl in samples)


def test_metrics_need_a_key_on_the_main_listener(server):
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(server, key=None)
    assert refused.value.code == 401
