"""A webhook receiver for the watchlist tests: a real HTTP server on 127.0.0.1 that can be told to fail."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from facefind.watchlists.ops import SIGNATURE_HEADER, signature

SECRET = "a webhook secret for tests 0123"


@dataclass
class Receiver:
    """What the receiver was sent: every attempt, and the bodies it accepted (signature checked)."""

    url: str
    fail_first: int = 0
    attempts: list[dict] = field(default_factory=list)
    accepted: list[dict] = field(default_factory=list)
    secret: str = SECRET


@contextmanager
def webhook_receiver(fail_first: int = 0) -> Iterator[Receiver]:
    """Answers 500 to the first ``fail_first`` POSTs, 401 to a wrong signature, else 204; stopped on exit."""
    receiver = Receiver(url="", fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            signed = self.headers.get(SIGNATURE_HEADER) == signature(receiver.secret, body)
            receiver.attempts.append({"delivery": self.headers.get("X-Facefind-Delivery"), "signed": signed})
            if len(receiver.attempts) <= receiver.fail_first:
                self.send_response(500)
            elif not signed:
                self.send_response(401)
            else:
                receiver.accepted.append(json.loads(body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def fast_retries(monkeypatch) -> None:
    """Retries after 0.1 s, 0.2 s, ... instead of seconds, so a test sees several attempts quickly."""
    monkeypatch.setattr("facefind.watchlists.ops.RETRY_BASE_S", 0.1)
