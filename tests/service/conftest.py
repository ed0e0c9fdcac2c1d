"""A real server for the service tests: uvicorn on a free loopback port, in a thread, per test module."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import uvicorn

from facefind.api import FaceFind
from facefind.pipeline import FacePipeline
from facefind.service import ServiceSettings, create_app


@dataclass
class Served:
    """A running service: its base URL, and the library API behind it (to prepare data directly)."""

    url: str
    facefind: FaceFind
    settings: ServiceSettings

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120.0, **options)

    def wait_for_job(self, client: httpx.Client, job_id: int, timeout_s: float = 300.0) -> dict:
        """Poll a job until it ends; returns its last state and the distinct progress seen on the way."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
            if job["status"] != "running":
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still running after {timeout_s} s")


@contextmanager
def serve(settings: ServiceSettings, pipeline: FacePipeline) -> Iterator[Served]:
    """Start the app under uvicorn on 127.0.0.1 (a socket bound here, so no port race); stop it after."""
    facefind = FaceFind(settings.library, max_pixels=settings.max_pixels)
    facefind._pipeline = pipeline  # the session's loaded models
    app = create_app(settings, facefind)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", facefind, settings)
    finally:
        server.should_exit = True
        thread.join(60)
        listener.close()


def problem_of(response: httpx.Response) -> dict:
    """The RFC 9457 body of an error response, checked for its required shape."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert body["status"] == response.status_code and body["reason"] and body["detail"] and body["title"]
    return body


def person_of(path: str) -> str:
    """named_people/train/<person>/photo.jpg -> person."""
    return Path(path).parent.name
