"""Fixtures: a real `waitline serve` on a free loopback port, a webhook receiver, and a
validator of responses and webhooks against Telnyx's own OpenAPI description
(`telnyx/openapi-queue-subset.yml` beside this file, or the file named by `WAITLINE_OPENAPI`).

Every webhook the receiver gets is checked as it arrives: its Ed25519 signature against the
server's public key, its headers and body against the webhook of its event type in the
description. Failures are recorded, and the session fails at its end if there was any.

With `WAITLINE_COMPAT_TLS=1` the server serves HTTPS with a certificate from a test CA made
for the session (never kept), and the clients trust that CA only.

With `WAITLINE_COMPAT_CLUSTER=N` (N > 1) the service is N nodes sharing a fresh database on
the PostgreSQL of `WAITLINE_TEST_POSTGRES_URL` (see `scripts/postgres.sh`), behind a tiny
round-robin HTTP proxy on loopback: the SDK sees one base URL, and consecutive requests reach
different nodes (those not owning the tenant forward them to its owner). Every node sends
its own tenants' webhooks to the same receiver, signed with the same key."""

from __future__ import annotations

import base64
import collections
import contextlib
import glob
import http.client
import http.server
import itertools
import json
import os
import pathlib
import socket
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from jsonschema import Draft202012Validator
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = pathlib.Path(__file__).resolve().parents[3]
API_KEY = "compat-test-key"
SIGNING_SEED = base64.b64encode(bytes(range(32))).decode()
OPENAPI_IN_REPO = pathlib.Path(__file__).resolve().parent / "telnyx" / "openapi-queue-subset.yml"

# The webhook of the description that each event type is sent as.
WEBHOOK_OF_EVENT = {
    "call.initiated": "callInitiated",
    "call.answered": "callAnswered",
    "call.enqueued": "callEnqueued",
    "call.dequeued": "callLeftQueue",
    "call.bridged": "callBridged",
    "call.hangup": "callHangup",
}
# How far a webhook's telnyx-timestamp may be from now (what the Telnyx SDKs accept).
TIMESTAMP_TOLERANCE_SECS = 300
# Serve HTTPS in this session (see the module's docstring).
TLS = os.environ.get("WAITLINE_COMPAT_TLS") == "1"
# Run N nodes behind a round-robin proxy (see the module's docstring); 0 or 1: one server.
CLUSTER = int(os.environ.get("WAITLINE_COMPAT_CLUSTER") or "0")
CLUSTER_SECRET = "compat-cluster-secret-of-the-test-session"
# The session's receiver, for the terminal summary.
SESSION_HOOKS: list["Hooks"] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call_of(raw: bytes) -> str:
    """The event type and call a webhook body names, for messages."""
    try:
        data = json.loads(raw)["data"]
        return f"{data['event_type']} of call {data['payload']['call_control_id']}"
    except Exception:  # noqa: BLE001
        return f"unreadable body {raw[:200]!r}"


class Hooks:
    """Webhooks as received (raw body text and headers, in arrival order), each checked on
    arrival: signature, headers and body against the description. A check that fails is
    recorded in `failures`; the ones that pass are counted by event type in `validated`."""

    def __init__(self, openapi: "OpenApi") -> None:
        self.items: list[tuple[str, dict[str, str]]] = []
        self.failures: list[str] = []
        self.validated: collections.Counter[str] = collections.Counter()
        self.public_key: str | None = None
        self.server_started = False
        self.openapi = openapi
        self.lock = threading.Lock()

    def receive(self, raw: bytes, headers: dict[str, str]) -> None:
        problems = self._check(raw, headers)
        with self.lock:
            self.items.append((raw.decode("utf-8", "replace"), headers))
            if problems:
                self.failures.append(f"webhook #{len(self.items)} ({_call_of(raw)}): {'; '.join(problems)}")

    def _check(self, raw: bytes, headers: dict[str, str]) -> list[str]:
        try:
            problems = self._signature_problems(raw, headers)
            body = json.loads(raw)
            event_type = body.get("data", {}).get("event_type") if isinstance(body, dict) else None
            webhook = WEBHOOK_OF_EVENT.get(event_type)
            if webhook is None:
                return [*problems, f"unknown event type {event_type!r}"]
            problems += self.openapi.webhook_errors(webhook, headers, body)
        except Exception as e:  # noqa: BLE001 (a receiver never fails the delivery)
            return [f"check raised {e!r}"]
        if not problems:
            with self.lock:
                self.validated[event_type] += 1
        return problems

    def _signature_problems(self, raw: bytes, headers: dict[str, str]) -> list[str]:
        h = {k.lower(): v for k, v in headers.items()}
        timestamp, signature = h.get("telnyx-timestamp"), h.get("telnyx-signature-ed25519")
        if timestamp is None or signature is None:
            return ["signature headers missing"]
        if self.public_key is None:
            return ["arrived before the server's public key was known"]
        problems = []
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TIMESTAMP_TOLERANCE_SECS:
            problems.append(f"telnyx-timestamp {timestamp!r} not a current Unix time")
        try:
            VerifyKey(base64.b64decode(self.public_key)).verify(
                timestamp.encode() + b"|" + raw, base64.b64decode(signature, validate=True)
            )
        except (BadSignatureError, ValueError) as e:
            problems.append(f"signature does not verify ({e})")
        return problems

    def wait_for(self, pred, timeout: float = 10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                found = [i for i in self.items if pred(json.loads(i[0]))]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError("webhook not received in time")

    def wait_for_count(self, pred, count: int, timeout: float = 10.0) -> list[dict]:
        """The bodies matching `pred`, once there are at least `count` of them."""
        deadline = time.time() + timeout
        while True:
            with self.lock:
                found = [b for b in (json.loads(i[0]) for i in self.items) if pred(b)]
            if len(found) >= count:
                return found
            assert time.time() < deadline, f"{len(found)} of {count} webhooks received in time"
            time.sleep(0.05)

    def wait_quiet(self, quiet: float = 0.5, timeout: float = 15.0) -> None:
        """Waits until no webhook has arrived for `quiet` seconds (at most `timeout`)."""
        deadline = time.time() + timeout
        seen = -1
        while time.time() < deadline:
            with self.lock:
                n = len(self.items)
            if n == seen:
                return
            seen = n
            time.sleep(quiet)


@pytest.fixture(scope="session")
def hooks(openapi):
    store = Hooks(openapi)
    SESSION_HOOKS.append(store)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            store.receive(raw, dict(self.headers.items()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield store
    server.shutdown()


@pytest.fixture(scope="session", autouse=True)
def webhooks_conform(hooks):
    """Fails the run if any webhook received in the session failed its checks or had an
    unknown event type, or if a session that ran the server validated none at all."""
    yield
    hooks.wait_quiet()
    with hooks.lock:
        failures, validated, received = list(hooks.failures), sum(hooks.validated.values()), len(hooks.items)
    assert not failures, f"{len(failures)} of {received} webhooks failed their checks:\n" + "\n".join(failures[:20])
    if hooks.server_started:
        assert validated > 0, "the server ran but no webhook was received and validated"
    assert validated == received, f"{received} webhooks received, {validated} validated"


def pytest_terminal_summary(terminalreporter):
    for store in SESSION_HOOKS:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(store.validated.items()))
        terminalreporter.write_line(
            f"webhooks: {sum(store.validated.values())} validated against the Telnyx description "
            f"({counts or 'none'}); {len(store.failures)} failed"
        )


def issue_test_certificate(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A CA and a certificate for 127.0.0.1 that it signed, written as PEM files in `folder`:
    (CA certificate, server certificate, server key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def build(subject: str, public_key, issuer: str, signer, ca: bool, san=None):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(validity[0]).not_valid_after(validity[1])
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("waitline test CA", ca_key.public_key(), "waitline test CA", ca_key, True)
    leaf = build("127.0.0.1", key.public_key(), "waitline test CA", ca_key, False,
                 [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def wait_until_answering(base: str, context=None) -> None:
    for _ in range(400):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1, context=context)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server at {base} did not start")


@pytest.fixture(scope="session")
def server(hooks):
    binary = os.environ.get("WAITLINE_BIN", str(ROOT / "target" / "debug" / "waitline"))
    common = [binary, "serve", "--api-key", API_KEY, "--webhook-url", hooks.url, "--signing-key", SIGNING_SEED]
    if CLUSTER > 1:
        assert not TLS, "WAITLINE_COMPAT_CLUSTER runs over plain HTTP"
        with cluster(common, CLUSTER) as base:
            yield from started(hooks, base, None, None)
        return
    port = free_port()
    # A durable server (the default), on a data directory of its own.
    data = tempfile.mkdtemp(prefix="waitline-compat-")
    args = [*common, "--listen", f"127.0.0.1:{port}", "--data-dir", data]
    context, ca_file = None, None
    if TLS:
        ca_file, cert, key = issue_test_certificate(pathlib.Path(tempfile.mkdtemp(prefix="waitline-compat-tls-")))
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
        context = ssl.create_default_context(cafile=str(ca_file))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"{'https' if TLS else 'http'}://127.0.0.1:{port}"
    try:
        wait_until_answering(base, context)
    except RuntimeError:
        proc.kill()
        raise
    yield from started(hooks, base, context, ca_file)
    proc.terminate()
    proc.wait(timeout=20)
    shutil.rmtree(data, ignore_errors=True)
    if ca_file is not None:
        shutil.rmtree(ca_file.parent, ignore_errors=True)


def started(hooks, base: str, context, ca_file):
    """The service at `base` as the tests see it, once its public key is checked."""
    public_key = json.load(urllib.request.urlopen(base + "/v2/webhook_public_key", context=context))["data"]["public_key"]
    expected = base64.b64encode(bytes(SigningKey(base64.b64decode(SIGNING_SEED)).verify_key)).decode()
    assert public_key == expected, "the published public key is not the one of --signing-key"
    hooks.public_key = public_key
    hooks.server_started = True
    yield {"base": base, "public_key": public_key, "ssl_context": context, "ca_file": ca_file}


def fresh_database(name: str) -> str:
    """The URL of an empty database `name` (dropped and made again) on the PostgreSQL of
    `WAITLINE_TEST_POSTGRES_URL`, made with `psql`."""
    url = os.environ.get("WAITLINE_TEST_POSTGRES_URL")
    if not url:
        pytest.exit("WAITLINE_COMPAT_CLUSTER needs WAITLINE_TEST_POSTGRES_URL (run under scripts/postgres.sh)", 2)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    psql = shutil.which("psql") or (found[-1] if found else None)
    assert psql, "psql not found"
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run([psql, url, "-q", "-c", sql], check=True, stdout=subprocess.DEVNULL)
    return url.rsplit("/", 1)[0] + "/" + name


class RoundRobin(http.server.ThreadingHTTPServer):
    """A tiny HTTP proxy on loopback: each request goes to the next node in turn, and its
    answer comes back as the node gave it."""

    daemon_threads = True
    # Hop-by-hop headers, and those the proxy writes itself.
    NOT_PASSED = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server", "host"}

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = [urllib.parse.urlsplit(n) for n in nodes]
        self.turn = itertools.count()
        self.sent = collections.Counter()
        super().__init__(("127.0.0.1", 0), RoundRobinHandler)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RoundRobinHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _pass(self) -> None:
        proxy: RoundRobin = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        node = proxy.nodes[next(proxy.turn) % len(proxy.nodes)]
        proxy.sent[node.netloc] += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() not in RoundRobin.NOT_PASSED}
        upstream = http.client.HTTPConnection(node.hostname, node.port, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in RoundRobin.NOT_PASSED:
                    self.send_header(k, v)
        finally:
            upstream.close()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _pass

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def cluster(common: list[str], count: int):
    """`count` nodes over a fresh database, started side by side, behind a round-robin
    proxy whose base URL it yields once every node serves the tenant (directly or by
    forwarding)."""
    database = fresh_database("waitline_compat_cluster")
    procs, nodes = [], []
    for _ in range(count):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [*common, "--listen", f"127.0.0.1:{port}", "--postgres-url", database, "--node-url", url,
                "--cluster-secret", CLUSTER_SECRET, "--lease-ms", "1500"]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        nodes.append(url)
    proxy = RoundRobin(nodes)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for url in nodes:
            wait_until_answering(url)
            # Served through this node: its owner has loaded it, and this node knows where.
            deadline = time.time() + 20
            while True:
                req = urllib.request.Request(url + "/v2/queues", headers={"Authorization": f"Bearer {API_KEY}"})
                try:
                    urllib.request.urlopen(req, timeout=5)
                    break
                except urllib.error.HTTPError as e:
                    assert e.code == 503 and time.time() < deadline, f"{url}: {e.code} {e.read()!r}"
                time.sleep(0.05)
        yield proxy.base
        assert len(proxy.sent) == count, f"requests reached {dict(proxy.sent)}, not all {count} nodes"
    finally:
        proxy.shutdown()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)


def openapi_path() -> pathlib.Path:
    env = os.environ.get("WAITLINE_OPENAPI")
    return pathlib.Path(env) if env else OPENAPI_IN_REPO


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
        errors = self.errors(schema, body)
        assert not errors, f"{method} {template} {status}: {errors[0]}"

    def errors(self, schema, instance) -> list[str]:
        """Every way `instance` breaks `schema` (a `null` breaks any schema whose type does not
        list "null"), as "message at path" strings."""
        validator = Draft202012Validator(self._rebase(schema), registry=self.registry)
        found = sorted(validator.iter_errors(instance), key=lambda e: (list(e.absolute_path), e.message))
        return [f"{e.message} at {list(e.absolute_path)}" for e in found]

    def webhook_errors(self, webhook: str, headers: dict[str, str], body) -> list[str]:
        """Checks a received webhook against `webhooks.<webhook>` of the description: its
        required header parameters (present, of their type), its body against the request
        body's schema, and, since Telnyx's schemas require no field, that the event object
        carries every field its schema declares and no field that it does not."""
        op = self.doc["webhooks"][webhook]["post"]
        lowered = {k.lower(): v for k, v in headers.items()}
        problems = []
        for param in map(self._deref, op.get("parameters", [])):
            if param.get("in") != "header":
                continue
            value = lowered.get(param["name"].lower())
            if value is None:
                if param.get("required"):
                    problems.append(f"header {param['name']} missing")
                continue
            if param["schema"].get("type") == "integer":
                if not value.lstrip("-").isdigit():
                    problems.append(f"header {param['name']} {value!r} is not an integer")
                    continue
                value = int(value)
            problems += [f"header {param['name']}: {e}" for e in self.errors(param["schema"], value)]
        schema = self._deref(op["requestBody"]["content"]["application/json"]["schema"])
        problems += [f"{webhook}: {e}" for e in self.errors(schema, body)]
        event_schema = self._deref(schema["properties"]["data"])
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            problems.append(f"{webhook}: no data object")
        else:
            declared = set(event_schema["properties"])
            problems += [f"{webhook}: data.{k} missing" for k in sorted(declared - set(data))]
            problems += [f"{webhook}: data.{k} not in the schema" for k in sorted(set(data) - declared)]
            payload_declared = set(self._deref(event_schema["properties"]["payload"])["properties"])
            payload = data.get("payload")
            if isinstance(payload, dict):
                problems += [f"{webhook}: payload.{k} not in the schema" for k in sorted(set(payload) - payload_declared)]
        return problems

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
