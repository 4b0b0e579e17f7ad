"""Fixtures: a real `waitline serve` on a free loopback port, a webhook receiver, and a
validator of responses against Telnyx's own OpenAPI description."""

from __future__ import annotations

import base64
import http.server
import json
import os
import pathlib
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = pathlib.Path(__file__).resolve().parents[3]
API_KEY = "compat-test-key"
SIGNING_SEED = base64.b64encode(bytes(range(32))).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hooks:
    """Webhooks as received: raw body text and headers, in arrival order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def wait_for(self, pred, timeout: float = 10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                found = [i for i in self.items if pred(json.loads(i[0]))]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError("webhook not received in time")


@pytest.fixture(scope="session")
def hooks():
    store = Hooks()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            with store.lock:
                store.items.append((body, dict(self.headers.items())))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield store
    server.shutdown()


@pytest.fixture(scope="session")
def server(hooks):
    binary = os.environ.get("WAITLINE_BIN", str(ROOT / "target" / "debug" / "waitline"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--api-key", API_KEY,
         "--webhook-url", hooks.url, "--signing-key", SIGNING_SEED],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("server did not start")
    public_key = json.load(urllib.request.urlopen(base + "/v2/webhook_public_key"))["data"]["public_key"]
    yield {"base": base, "public_key": public_key}
    proc.terminate()
    proc.wait(timeout=20)


def openapi_path() -> pathlib.Path:
    env = os.environ.get("WAITLINE_OPENAPI")
    return pathlib.Path(env) if env else ROOT.parent / "shared" / "telnyx" / "openapi-queue-subset.yml"


class OpenApi:
    """Validates a response against the operation's schema for its status code."""

    def __init__(self, path: pathlib.Path) -> None:
        self.doc = yaml.safe_load(path.read_text())
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource("urn:telnyx", resource)

    def _deref(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"].lstrip("#/").split("/")
            obj = self.doc
            for part in ref:
                obj = obj[part]
        return obj

    def check(self, method: str, template: str, status: int, body) -> None:
        op = self.doc["paths"][template][method.lower()]
        responses = op["responses"]
        response = self._deref(responses.get(str(status)) or responses.get("default"))
        assert response is not None, f"{method} {template} has no response {status}"
        content = response.get("content")
        if status == 204 or content is None:
            assert body in (None, b"", ""), f"{status} must have no body"
            return
        schema = content["application/json"]["schema"]
        validator = Draft202012Validator(self._rebase(schema), registry=self.registry)
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{method} {template} {status}: {errors[0].message} at {list(errors[0].path)}"

    def _rebase(self, schema):
        """Points local refs (#/components/...) at the registered document."""
        if isinstance(schema, dict):
            return {k: ("urn:telnyx" + v if k == "$ref" and v.startswith("#") else self._rebase(v)) for k, v in schema.items()}
        if isinstance(schema, list):
            return [self._rebase(v) for v in schema]
        return schema


@pytest.fixture(scope="session")
def openapi():
    path = openapi_path()
    assert path.exists(), f"Telnyx OpenAPI subset not found at {path} (set WAITLINE_OPENAPI)"
    return OpenApi(path)
