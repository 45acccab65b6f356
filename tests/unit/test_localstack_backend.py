"""localstack://: LocalStack's environment conventions, the loopback rule, clients built by
localstack-client, and one clear line when nothing (or not LocalStack) answers.

No LocalStack runs on these machines (no Docker; its host install needs Python 3.13 and an auth
token), so support is proven here only up to the client; nothing below fakes a LocalStack.
"""
from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import localstack_client.config
import localstack_client.session
import pytest

from phoenixci.backends import get_backend
from phoenixci.backends.localstack import NO_INSTANCES, LocalstackBackend, probe, skip_reason
from phoenixci.errors import ConfigError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ENV_NAMES = ("LOCALSTACK_HOST", "EDGE_PORT", "USE_SSL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def free_loopback_port() -> int:
    """A port nothing listens on: bind, read the port, close."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend(url: str) -> LocalstackBackend:
    b = get_backend(url)
    assert isinstance(b, LocalstackBackend)
    return b


# -- where it answers -------------------------------------------------------------------------
def test_default_is_loopback_4566() -> None:
    b = backend("localstack://")
    assert (b.endpoint_url, b.region) == ("http://127.0.0.1:4566", "us-east-1")


@pytest.mark.parametrize("env, endpoint", [
    ({"LOCALSTACK_HOST": "127.0.0.2:4999"}, "http://127.0.0.2:4999"),
    ({"LOCALSTACK_HOST": "localhost"}, "http://127.0.0.1:4566"),
    ({"LOCALSTACK_HOST": "localhost", "EDGE_PORT": "4600"}, "http://127.0.0.1:4600"),
    ({"LOCALSTACK_HOST": "localhost:4700", "EDGE_PORT": "4600"}, "http://127.0.0.1:4700"),
    ({"EDGE_PORT": "4600"}, "http://127.0.0.1:4600"),
    ({"USE_SSL": "1"}, "https://127.0.0.1:4566"),
    ({"USE_SSL": "true", "LOCALSTACK_HOST": "127.0.0.3:443"}, "https://127.0.0.3:443"),
    ({"USE_SSL": "0"}, "http://127.0.0.1:4566"),
])
def test_localstack_env_conventions(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                    endpoint: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert backend("localstack://").endpoint_url == endpoint


def test_the_url_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSTACK_HOST", "127.0.0.2:4999")
    monkeypatch.setenv("EDGE_PORT", "4600")
    assert backend("localstack://127.0.0.5:5000").endpoint_url == "http://127.0.0.5:5000"
    assert backend("localstack://localhost").endpoint_url == "http://127.0.0.1:4566"
    monkeypatch.setenv("USE_SSL", "1")  # the URL has no place for the protocol: USE_SSL still applies
    assert backend("localstack://localhost:4566").endpoint_url == "https://127.0.0.1:4566"


def test_region_from_url_then_aws_default_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert backend("localstack://").region == "eu-central-1"
    assert backend("localstack://?region=ap-south-1").region == "ap-south-1"


def test_same_endpoint_as_localstack_client_computes() -> None:
    b = backend("localstack://localhost:4567")
    assert localstack_client.config.get_service_endpoint("s3", localstack_host="127.0.0.1:4567") \
        == b.endpoint_url


@pytest.mark.parametrize("url, env, fragment", [
    ("localstack://10.1.2.3:4566", {}, "must listen on 127.0.0.0/8, not 10.1.2.3"),
    ("localstack://", {"LOCALSTACK_HOST": "192.168.7.7:4566"}, "must listen on 127.0.0.0/8"),
    ("localstack://", {"LOCALSTACK_HOST": "192.168.7.7:4566"}, "with LOCALSTACK_HOST=192.168.7.7:4566"),
    ("localstack://localhost:notaport", {}, "expected localstack://HOST:PORT"),
    ("localstack://localhost:0", {}, "expected localstack://HOST:PORT"),
    ("localstack://user@localhost:4566", {}, "expected localstack://HOST:PORT"),
    ("localstack://", {"LOCALSTACK_HOST": "localhost:x"}, "LOCALSTACK_HOST='localhost:x': expected host[:port]"),
    ("localstack://", {"EDGE_PORT": "edge"}, "EDGE_PORT='edge': expected a port number"),
    ("localstack://host.invalid:4566", {}, "cannot resolve 'host.invalid'"),
    ("localstack://?profile=x", {}, "unknown option(s) profile"),
])
def test_bad_addresses_are_one_clear_line(monkeypatch: pytest.MonkeyPatch, url: str,
                                          env: dict[str, str], fragment: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        get_backend(url)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# -- clients -----------------------------------------------------------------------------------
def test_clients_come_from_localstack_client(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    original = localstack_client.session.Session.client

    def spy(self: Any, service_name: str, **kwargs: Any) -> Any:
        calls.append((service_name, kwargs))
        return original(self, service_name, **kwargs)

    monkeypatch.setattr(localstack_client.session.Session, "client", spy)
    b = backend("localstack://127.0.0.1:4599?region=eu-west-1")
    s3 = b.client("s3")
    assert [name for name, _ in calls] == ["s3"]
    assert s3.meta.endpoint_url == "http://127.0.0.1:4599"
    assert s3.meta.region_name == "eu-west-1"
    creds = b.session.get_credentials().get_frozen_credentials()
    assert (creds.access_key, creds.secret_key, creds.token) == ("test", "test", None)
    assert b.env()["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4599"
    assert "AWS_SESSION_TOKEN" not in b.env()


def test_aws_endpoint_url_does_not_divert_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """localstack-client would send every call to AWS_ENDPOINT_URL (a local cloud's env file sets
    it to moto); the URL wins."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5999")
    b = backend("localstack://127.0.0.1:4599")
    for service in ("s3", "sts", "iam", "ec2", "cloudformation"):
        assert b.client(service).meta.endpoint_url == "http://127.0.0.1:4599"


def test_credentials_follow_the_environment_and_explicit_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "000000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    b = backend("localstack://")
    frozen = b.client("sts")._request_signer._credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key) == ("000000000001", "s")
    other = b.session_for({"AccessKeyId": "AKIA1", "SecretAccessKey": "x", "SessionToken": "tok"})
    client = b.client("s3", other)
    frozen = client._request_signer._credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.token) == ("AKIA1", "tok")
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"


def test_unknown_service_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="localstack-client knows no service 'nosuch'"):
        backend("localstack://").client("nosuch")


def test_missing_localstack_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "localstack_client.session", None)
    with pytest.raises(ConfigError, match=r"pip install 'phoenixci\[host\]'"):
        get_backend("localstack://")


def test_the_agent_install_does_not_load_localstack_client() -> None:
    """The pipeline commands (the CI agent's boto3-only install) never import it."""
    code = ("import sys, phoenixci.cli, phoenixci.backends; "
            "assert 'localstack_client' not in sys.modules, 'loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# -- nothing or something else listening -----------------------------------------------------
def test_nothing_listening_is_one_line_before_any_aws_call(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_loopback_port()
    b = backend(f"localstack://127.0.0.1:{port}")
    monkeypatch.setattr(LocalstackBackend, "client", lambda *a, **k: pytest.fail("an AWS call was made"))
    with pytest.raises(ConfigError) as info:
        b.start()
    message = str(info.value)
    assert message == (f"nothing answers at http://127.0.0.1:{port} (localstack://127.0.0.1:{port}): "
                       "start LocalStack (`localstack start`) or point LOCALSTACK_HOST/the URL at it")
    assert probe(b.endpoint_url)[0] == "nothing"


def test_nothing_listening_names_the_env_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_loopback_port()
    monkeypatch.setenv("LOCALSTACK_HOST", f"localhost:{port}")
    with pytest.raises(ConfigError, match=rf"^nothing answers at http://127.0.0.1:{port} "
                                          rf"\(localstack:// with LOCALSTACK_HOST=localhost:{port}\)"):
        backend("localstack://").start()


class _NotLocalstack(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/json":
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_localstack() -> Iterator[int]:
    """Some other HTTP server on loopback (answers 404 to LocalStack's health path)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotLocalstack)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_something_that_is_not_localstack_is_named(not_localstack: int) -> None:
    b = backend(f"localstack://127.0.0.1:{not_localstack}")
    with pytest.raises(ConfigError) as info:
        b.start()
    assert str(info.value).startswith(
        f"something answers at http://127.0.0.1:{not_localstack} (localstack://127.0.0.1:{not_localstack}) "
        "but it is not LocalStack (GET /_localstack/health: HTTP 404): start LocalStack")
    assert "\n" not in str(info.value)


def test_silent_listener_times_out_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import phoenixci.backends.localstack as mod

    monkeypatch.setattr(mod, "HEALTH_TIMEOUT", 0.3)
    with socket.socket() as listener:  # accepts connections (backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        status, detail = probe(f"http://127.0.0.1:{port}")
    assert status == "other"
    assert detail.startswith("it does not answer GET /_localstack/health (")


# -- what the pytest plugin asks ---------------------------------------------------------------
def test_skip_reason_when_nothing_answers() -> None:
    port = free_loopback_port()
    reason = skip_reason(f"localstack://127.0.0.1:{port}")
    assert reason == (f"no LocalStack answers at http://127.0.0.1:{port} (localstack://127.0.0.1:{port}): "
                      "nothing listens there (Connection refused)")


def test_skip_reason_when_something_else_answers(not_localstack: int) -> None:
    reason = skip_reason(f"localstack://127.0.0.1:{not_localstack}")
    assert reason is not None and reason.startswith("no LocalStack answers at ")
    assert reason.endswith("something listens there but it is not LocalStack "
                           "(GET /_localstack/health: HTTP 404)")


def test_skip_reason_for_a_bad_url_is_its_error() -> None:
    assert skip_reason("localstack://10.0.0.1:4566") == (
        "backend localstack://10.0.0.1:4566: LocalStack must listen on 127.0.0.0/8, not 10.0.0.1")


def test_no_instances_reason_is_one_line() -> None:
    assert NO_INSTANCES == "LocalStack's EC2 only records rows: needs moto:// or aws://"


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_with_nothing_listening_is_one_line_exit_1() -> None:
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES and k != "PHOENIXCI_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-m", "phoenixci", "leaks", "--backend", f"localstack://127.0.0.1:{port}"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: nothing answers at http://127.0.0.1:{port}"), lines
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_a_listener_that_does_not_speak_http_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # the probe goes straight to loopback
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]

        def garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=garbage, daemon=True)
        thread.start()
        status, detail = probe(f"http://127.0.0.1:{port}")
        thread.join(5)
    assert status == "other"
    assert detail.startswith("it does not answer GET /_localstack/health (")
