"""Drives waitline with the official `telnyx` Python SDK, only `base_url` changed, and checks
every response against Telnyx's own OpenAPI description."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import telnyx

from conftest import API_KEY


@pytest.fixture()
def client(server):
    return telnyx.Telnyx(api_key=API_KEY, base_url=server["base"] + "/v2", public_key=server["public_key"], max_retries=0)


def dial(client) -> str:
    return client.calls.dial(connection_id="app", from_="+15550002", to="+15550001").data.call_control_id


def test_seed_flow_with_the_sdk(client):
    caller, agent = dial(client), dial(client)
    client.calls.actions.enqueue(caller, queue_name="sdk-support", max_wait_time_secs=600)
    queue = client.queues.retrieve("sdk-support").data
    assert (queue.name, queue.current_size, queue.max_size) == ("sdk-support", 1, 100)

    # Auto-pagination walks every page.
    others = [dial(client) for _ in range(24)]
    for c in others:
        client.calls.actions.enqueue(c, queue_name="sdk-support")
    listed = list(client.queues.calls.list("sdk-support", page_size=10))
    assert [c.call_control_id for c in listed] == [caller, *others]
    assert [c.queue_position for c in listed] == list(range(1, 26))

    # The SDK insists on call_control_id even with a queue: waitline ignores it.
    client.calls.actions.bridge(agent, call_control_id_to_bridge_with=agent, queue="sdk-support")
    status = client.calls.retrieve_status(caller).data
    assert status.is_alive
    assert client.queues.retrieve("sdk-support").data.current_size == 24

    client.calls.actions.leave_queue(others[0])
    assert client.queues.retrieve("sdk-support").data.current_size == 23
    client.calls.actions.hangup(caller)
    assert client.calls.retrieve_status(caller).data.is_alive is False
    with pytest.raises(telnyx.UnprocessableEntityError) as err:
        client.calls.actions.hangup(caller)
    assert err.value.body["errors"][0]["code"] == "90018"


def test_queue_lifecycle_with_the_sdk(client):
    created = client.queues.create(queue_name="sdk-explicit", max_size=5).data
    assert (created.name, created.max_size) == ("sdk-explicit", 5)
    assert client.queues.update("sdk-explicit", max_size=7).data.max_size == 7
    names = [q.name for q in client.queues.list()]
    assert "sdk-explicit" in names
    client.queues.delete("sdk-explicit")
    with pytest.raises(telnyx.NotFoundError):
        client.queues.retrieve("sdk-explicit")


def test_webhooks_verify_with_the_sdk(client, hooks):
    call = dial(client)
    client.calls.actions.enqueue(call, queue_name="sdk-hooks")
    got = hooks.wait_for(lambda b: b["data"]["event_type"] == "call.enqueued" and b["data"]["payload"]["call_control_id"] == call)
    body, headers = got[0]
    event = client.webhooks.unwrap(body, headers=headers)
    assert event.data.event_type == "call.enqueued"
    with pytest.raises(Exception):
        client.webhooks.unwrap(body.replace("sdk-hooks", "sdk-hookz"), headers=headers)


def raw(server, method: str, path: str, body=None, key: str | None = API_KEY):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(server["base"] + path, data=data, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    return status, (json.loads(text) if text else None)


def test_responses_validate_against_the_telnyx_openapi(server, openapi):
    def check(method, template, path, body=None, expect=None, key=API_KEY):
        status, payload = raw(server, method, path, body, key)
        if expect is not None:
            assert status == expect, (method, path, status, payload)
        openapi.check(method, template, status, payload)
        return payload

    call = check("POST", "/calls", "/v2/calls", {"connection_id": "a", "from": "+1", "to": "+2"}, 200)["data"]["call_control_id"]
    agent = check("POST", "/calls", "/v2/calls", {"connection_id": "a", "from": "+1", "to": "+2"}, 200)["data"]["call_control_id"]
    check("GET", "/calls/{call_control_id}", f"/v2/calls/{call}", expect=200)
    check("POST", "/calls/{call_control_id}/actions/enqueue", f"/v2/calls/{call}/actions/enqueue", {"queue_name": "oa"}, 200)
    check("POST", "/calls/{call_control_id}/actions/enqueue", f"/v2/calls/{call}/actions/enqueue", {"queue_name": "oa"}, 422)
    check("POST", "/calls/{call_control_id}/actions/enqueue", f"/v2/calls/{call}/actions/enqueue", {}, 422)
    check("GET", "/queues", "/v2/queues", expect=200)
    check("POST", "/queues", "/v2/queues", {"queue_name": "oa-explicit"}, 200)
    check("POST", "/queues", "/v2/queues", {"queue_name": "oa-explicit"}, 422)
    check("GET", "/queues/{queue_name}", "/v2/queues/oa", expect=200)
    check("GET", "/queues/{queue_name}", "/v2/queues/missing", expect=404)
    check("POST", "/queues/{queue_name}", "/v2/queues/oa", {"max_size": 10}, 200)
    check("GET", "/queues/{queue_name}/calls", "/v2/queues/oa/calls", expect=200)
    check("GET", "/queues/{queue_name}/calls/{call_control_id}", f"/v2/queues/oa/calls/{call}", expect=200)
    check("PATCH", "/queues/{queue_name}/calls/{call_control_id}", f"/v2/queues/oa/calls/{call}", {"keep_after_hangup": True}, 204)
    check("GET", "/queues/{queue_name}/calls/{call_control_id}", f"/v2/queues/oa/calls/{agent}", expect=404)
    check("POST", "/calls/{call_control_id}/actions/bridge", f"/v2/calls/{agent}/actions/bridge", {"queue": "oa", "call_control_id": agent}, 200)
    check("POST", "/calls/{call_control_id}/actions/bridge", f"/v2/calls/{agent}/actions/bridge", {"queue": "oa"}, 422)
    check("POST", "/calls/{call_control_id}/actions/leave_queue", f"/v2/calls/{agent}/actions/leave_queue", {}, 422)
    check("POST", "/calls/{call_control_id}/actions/transfer", f"/v2/calls/{call}/actions/transfer", {"to": "+3"}, 200)
    check("POST", "/calls/{call_control_id}/actions/hangup", f"/v2/calls/{call}/actions/hangup", {}, 200)
    check("POST", "/calls/{call_control_id}/actions/hangup", f"/v2/calls/{call}/actions/hangup", {}, 422)
    c2 = check("POST", "/calls", "/v2/calls", {"connection_id": "a", "from": "+1", "to": "+2"}, 200)["data"]["call_control_id"]
    check("POST", "/calls/{call_control_id}/actions/enqueue", f"/v2/calls/{c2}/actions/enqueue", {"queue_name": "oa2"}, 200)
    check("DELETE", "/queues/{queue_name}/calls/{call_control_id}", f"/v2/queues/oa2/calls/{c2}", expect=204)
    check("DELETE", "/queues/{queue_name}", "/v2/queues/oa-explicit", expect=204)
    check("POST", "/calls", "/v2/calls", b"{not json", 400)
    check("GET", "/queues", "/v2/queues", expect=401, key=None)
