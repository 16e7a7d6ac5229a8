"""Small loopback HTTP servers the gateway talks to in tests: an OIDC issuer (discovery +
JWKS, keys generated here) and a webhook receiver that records what it gets."""

from __future__ import annotations

import json
import select
import socket
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class JwksServer(_Server):
    """An OIDC issuer: `/.well-known/openid-configuration` and `/jwks.json` with one RSA key."""

    def __init__(self) -> None:
        self.key = new_rsa_key()
        self.kid = "test-key-1"

        class Handler(_Quiet):
            def do_GET(self) -> None:
                owner: JwksServer = self.server.owner  # type: ignore[attr-defined]
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": owner.issuer, "jwks_uri": f"{owner.issuer}/jwks.json"}
                elif self.path == "/jwks.json":
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(owner.key.public_key()))
                    body = {"keys": [{**jwk, "kid": owner.kid, "use": "sig", "alg": "RS256"}]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)

    @property
    def issuer(self) -> str:
        return self.url

    def token(
        self,
        *,
        sub: str | None = None,
        audience: str = "genimage-tests",
        email: str | None = None,
        email_verified: bool = True,
        expires_in: int = 300,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        issuer: str | None = None,
        algorithm: str = "RS256",
    ) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "sub": sub or f"user_{uuid.uuid4().hex}",
            "aud": audience,
            "iat": now,
            "exp": now + timedelta(seconds=expires_in),
        }
        if email is not None:
            claims["email"] = email
            claims["email_verified"] = email_verified
        return jwt.encode(claims, key or self.key, algorithm=algorithm, headers={"kid": kid or self.kid})


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver(_Server):
    """Records every POST; answers each path with its queue of statuses (then 204)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.plans: dict[str, list[int]] = {}
        self._lock = threading.Lock()

        class Handler(_Quiet):
            def do_POST(self) -> None:
                owner: Receiver = self.server.owner  # type: ignore[attr-defined]
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with owner._lock:
                    owner.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    queue = owner.plans.get(self.path) or []
                    status = queue.pop(0) if queue else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        super().__init__(Handler)

    def answer(self, path: str, *statuses: int) -> str:
        """Answer the next requests to ``path`` with ``statuses``; returns the full URL."""
        with self._lock:
            self.plans[path] = list(statuses)
        return f"{self.url}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


class SlowReceiver:
    """A webhook receiver that reads the request, then trickles its answer one byte every
    ``interval`` seconds: each read arrives in time, so only a total deadline ends the wait.
    Records when each request arrived and when the sender hung up."""

    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    def __init__(self, interval: float = 3.0) -> None:
        self.interval = interval
        self.accepted: list[float] = []
        self.hung_up: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                length = lengths[0] if lengths else 0
                while len(body) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                with owner._lock:
                    owner.accepted.append(time.monotonic())
                for byte in owner.RESPONSE:
                    readable, _, _ = select.select([sock], [], [], owner.interval)
                    if owner._stop.is_set():
                        return
                    if readable and not sock.recv(1):  # EOF: the sender gave up
                        with owner._lock:
                            owner.hung_up.append(time.monotonic())
                        return
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:
                        with owner._lock:
                            owner.hung_up.append(time.monotonic())
                        return

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/slow") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
