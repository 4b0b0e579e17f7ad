"""Drives waitline with the official `telnyx` Python SDK, only `base_url` changed, and checks
every response and every webhook against Telnyx's own OpenAPI description."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import telnyx

from conftest import API_KEY, TLS, WEBHOOK_OF_EVENT


def sdk_client(server, **options) -> telnyx.Telnyx:
    """The SDK with only `base_url` changed (and, over HTTPS, told which CA to trust: its
    httpx client takes the CA like any httpx client)."""
    if server["ssl_context"] is not None:
        options.setdefault("http_client", telnyx.DefaultHttpxClient(verify=server["ssl_context"]))
    return telnyx.Telnyx(api_key=API_KEY, base_url=server["base"] + "/v2", public_key=server["public_key"], **options)


@pytest.fixture()
def client(server):
    return sdk_client(server, max_retries=0)


@pytest.mark.skipif(not TLS, reason="HTTPS only with WAITLINE_COMPAT_TLS=1")
def test_the_sdk_verifies_the_server_certificate(server):
    assert server["base"].startswith("https://")
    # Trusting the test CA, the call goes through.
    assert isinstance(sdk_client(server, max_retries=0).queues.list().data, list)
    # Without the test CA (the SDK's default trust store) the connection is refused.
    untrusting = telnyx.Telnyx(api_key=API_KEY, base_url=server["base"] + "/v2", max_retries=0)
    with pytest.raises(telnyx.APIConnectionError):
        untrusting.queues.list()


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


def test_a_dial_retried_by_the_sdk_with_its_command_id_makes_one_call(client):
    first = client.calls.dial(connection_id="app", from_="+15550002", to="+15550001", command_id="sdk-dial-1").data
    again = client.calls.dial(connection_id="app", from_="+15550002", to="+15550001", command_id="sdk-dial-1").data
    assert again.call_control_id == first.call_control_id
    assert dial(client) != first.call_control_id


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


def test_every_webhook_type_validates_against_the_telnyx_openapi(client, hooks):
    """One scenario that sends each of the six webhooks, with and without client_state; the
    receiver checks each as it arrives (signature, headers, body), this test that they all
    came and passed."""
    plain = dial(client)
    stated = client.calls.dial(connection_id="app", from_="+15550003", to="+15550001", client_state="aGk=").data.call_control_id
    agent, dropped = dial(client), dial(client)
    client.calls.actions.enqueue(plain, queue_name="sdk-every-hook")
    client.calls.actions.enqueue(stated, queue_name="sdk-every-hook", client_state="Y2I=")
    client.calls.actions.enqueue(dropped, queue_name="sdk-every-hook")
    client.calls.actions.leave_queue(stated)  # call.dequeued, reason leave
    client.calls.actions.hangup(dropped)  # call.dequeued (hangup), call.hangup
    client.calls.actions.bridge(agent, call_control_id_to_bridge_with=agent, queue="sdk-every-hook")  # dequeued, bridged x2
    client.calls.actions.hangup(agent)  # call.hangup for both legs (caller, callee)
    client.calls.actions.hangup(stated, client_state="ZW5k")

    expected = {
        plain: ["call.initiated", "call.answered", "call.enqueued", "call.dequeued", "call.bridged", "call.hangup"],
        stated: ["call.initiated", "call.answered", "call.enqueued", "call.dequeued", "call.hangup"],
        agent: ["call.initiated", "call.answered", "call.bridged", "call.hangup"],
        dropped: ["call.initiated", "call.answered", "call.enqueued", "call.dequeued", "call.hangup"],
    }
    def call_of(body) -> str | None:
        return body["data"]["payload"].get("call_control_id")

    received = hooks.wait_for_count(lambda b: call_of(b) in expected, sum(map(len, expected.values())))
    got: dict[str, list[str]] = {}
    for b in received:
        got.setdefault(call_of(b), []).append(b["data"]["event_type"])
    assert got == expected
    assert {t for types in got.values() for t in types} == set(WEBHOOK_OF_EVENT)
    with hooks.lock:
        failed = [f for f in hooks.failures if any(c in f for c in expected)]
    assert not failed, "\n".join(failed)
    states = {(b["data"]["event_type"], b["data"]["payload"].get("client_state")) for b in received if call_of(b) == stated}
    assert ("call.initiated", "aGk=") in states and ("call.hangup", "ZW5k") in states
    assert all("client_state" not in b["data"]["payload"] for b in received if call_of(b) != stated)


def test_the_validators_refuse_null_for_a_string(openapi):
    """A `null` where Telnyx's schema says string fails, in a response and in a webhook."""
    call = {"record_type": "call", "call_control_id": "c", "call_leg_id": "l", "call_session_id": "s",
            "is_alive": True, "client_state": None}
    with pytest.raises(AssertionError, match="None is not of type 'string'"):
        openapi.check("GET", "/calls/{call_control_id}", 200, {"data": call})
    event = {"record_type": "event", "event_type": "call.answered", "id": "00000000-0000-0000-0000-000000000000",
             "occurred_at": "2024-01-01T00:00:00Z", "payload": {"call_control_id": "c", "client_state": None}}
    headers = {"telnyx-timestamp": "1700000000", "telnyx-signature-ed25519": "x"}
    errors = openapi.webhook_errors("callAnswered", headers, {"data": event})
    assert errors == ["callAnswered: None is not of type 'string' at ['data', 'payload', 'client_state']"]
    assert openapi.webhook_errors("callAnswered", headers, {"data": {**event, "payload": {"call_control_id": "c"}}}) == []
    assert "header telnyx-timestamp missing" in openapi.webhook_errors("callAnswered", {}, {"data": event})


def raw(server, method: str, path: str, body=None, key: str | None = API_KEY):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(server["base"] + path, data=data, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=server["ssl_context"]) as resp:
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
