"""Test scaffolding: a minimal but real IMDSv2 (token PUT, token checked on every GET) over HTTP.

Serves each caller (by source address) its own instance's meta-data, public key and user data;
enough for cloud-init 22.4's Ec2 datasource. The product's IMDS is phoenixci.localcloud.imds.
"""
from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class StubInstance:
    instance_id: str
    private_ip: str
    hostname: str
    mac: str
    public_key: str
    user_data: str


class ImdsStub:
    def __init__(self, host: str, port: int) -> None:
        self.instances: dict[str, StubInstance] = {}
        self.tokens: set[str] = set()
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802
                stub.requests.append(f"PUT {self.path}")
                if self.path != "/latest/api/token":
                    return self._send(404, "")
                token = secrets.token_urlsafe(24)
                stub.tokens.add(token)
                self._send(200, token)

            def do_GET(self) -> None:  # noqa: N802
                stub.requests.append(f"GET {self.path}")
                if self.headers.get("X-aws-ec2-metadata-token") not in stub.tokens:
                    return self._send(401, "")
                inst = stub.instances.get(self.client_address[0])
                if inst is None:
                    return self._send(404, "")
                parts = self.path.strip("/").split("/", 1)
                rest = parts[1] if len(parts) > 1 else ""
                body = stub.lookup(inst, rest)
                if body is None:
                    return self._send(404, "")
                self._send(200, body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def lookup(self, inst: StubInstance, path: str) -> str | None:
        if path == "":
            return "dynamic\nmeta-data\nuser-data"
        if path == "user-data":
            return inst.user_data
        if path.rstrip("/") == "dynamic":
            return "instance-identity/"
        if path.rstrip("/") == "dynamic/instance-identity":
            return "document"
        if path == "dynamic/instance-identity/document":
            return json.dumps({"instanceId": inst.instance_id, "region": "us-east-1",
                               "availabilityZone": "us-east-1a", "privateIp": inst.private_ip,
                               "accountId": "123456789012", "imageId": "ami-phoenixci",
                               "instanceType": "t3.micro", "architecture": "x86_64"})
        tree: dict[str, object] = {
            "ami-id": "ami-phoenixci", "instance-id": inst.instance_id, "instance-type": "t3.micro",
            "local-ipv4": inst.private_ip, "local-hostname": inst.hostname, "hostname": inst.hostname,
            "mac": inst.mac, "placement": {"availability-zone": "us-east-1a", "region": "us-east-1"},
            "public-keys": {"0": {"openssh-key": inst.public_key}},
            "services": {"domain": "amazonaws.com", "partition": "aws"},
        }
        if not path.startswith("meta-data"):
            return None
        node: object = tree
        for part in [p for p in path.split("/")[1:] if p]:
            if node is tree and part.startswith("public-keys"):
                node = tree["public-keys"]
                continue
            if not isinstance(node, dict):
                return None
            key = part.split("=")[0]
            if key not in node:
                return None
            node = node[key]
        if isinstance(node, dict):
            if node is tree["public-keys"]:
                return "0=phoenixci"
            return "\n".join(k + ("/" if isinstance(v, dict) else "") for k, v in node.items())
        return str(node)

    def __enter__(self) -> ImdsStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
