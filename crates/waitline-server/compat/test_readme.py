"""The repository README's service examples, run exactly as written: the quickstart command
starts the service, the curl flow runs against it, and the SDK example runs against the
suite's server (whose webhooks the example's handler then verifies)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from conftest import API_KEY, ROOT, free_port

sys.path.insert(0, str(ROOT / "scripts"))
from readme_blocks import block_containing  # noqa: E402


def json_values(text: str) -> list:
    """The JSON documents printed one after another (curl adds no newline between them)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text.startswith("data: ", i) or text.startswith("event: ", i) or text.startswith("id: ", i):
            break  # the event stream starts here
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


@pytest.fixture(scope="module")
def quickstart():
    """The README's first command, pasted as is (the listen address set in the environment)."""
    command = block_containing("sh", "# the service on").splitlines()[0].split("#")[0].strip()
    assert command == "cargo run --release -p waitline-server -- serve"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITLINE_")}
    env["WAITLINE_LISTEN"] = f"127.0.0.1:{port}"
    # Its data directory is a fresh one (the default, ./waitline-data, would keep the key
    # of an earlier run, and the quickstart prints a key only when it makes one).
    data = tempfile.mkdtemp(prefix="waitline-quickstart-")
    env["WAITLINE_DATA_DIR"] = data
    proc = subprocess.Popen(command, shell=True, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    key = None
    deadline = time.time() + 600  # a release build may happen here
    for line in proc.stdout:
        if "generated one for tenant 'default': " in line:
            key = line.rsplit(": ", 1)[1].strip()
        if line.startswith("Listening on"):
            break
        assert time.time() < deadline, "the quickstart server did not start"
    assert key, "the quickstart server printed no API key"
    yield {"base": f"http://127.0.0.1:{port}/v2", "key": key}
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)


def test_readme_curl_flow(quickstart):
    script = block_containing("sh", "CALLER=$(curl")
    env = dict(os.environ, KEY=quickstart["key"], B=quickstart["base"])
    proc = subprocess.Popen(["bash", "-c", script], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    # The last line follows the event stream: once it is open, a new call must show on it.
    headers = {"Authorization": f"Bearer {quickstart['key']}"}
    deadline = time.time() + 30
    while not any("data: " in line for line in out):
        assert time.time() < deadline, f"no event on the stream; output so far: {out}"
        body = json.dumps({"connection_id": "app", "from": "+15550009", "to": "+15550100"}).encode()
        urllib.request.urlopen(urllib.request.Request(quickstart["base"] + "/calls", body, headers), timeout=5)
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    reader.join(timeout=5)
    text = "".join(out)
    values = json_values(text)
    assert not any("errors" in v for v in values), values
    enqueued, queue, listing, bridged, requeued, left, status = values
    assert enqueued == bridged == requeued == left == {"data": {"result": "ok"}}
    assert queue["data"]["current_size"] == 1
    assert [c["queue_position"] for c in listing["data"]] == [1]
    assert status["data"]["state"] == "active" and status["data"]["is_alive"] is True
    assert '"event_type":"call.initiated"' in text


def test_readme_sdk_example(server, hooks):
    code = block_containing("python", "import telnyx")
    saved = dict(os.environ)
    os.environ.update(KEY=API_KEY, B=server["base"] + "/v2")
    try:
        scope = {"__name__": "readme"}
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # The example's webhook handler verifies what the server really sent.
    bridged = hooks.wait_for(lambda b: b["data"]["event_type"] == "call.bridged")
    raw, headers = bridged[-1]
    event = scope["on_webhook"](raw.encode(), headers)
    assert event.data.event_type == "call.bridged"
    with pytest.raises(Exception):
        scope["on_webhook"](raw.replace("call.bridged", "call.hangup").encode(), headers)
