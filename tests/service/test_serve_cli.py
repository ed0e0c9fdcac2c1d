"""`facefind serve` as a user runs it: a real process on a loopback port, stopped like Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from facefind.api import FaceFind
from facefind.library import Library
from facefind.service import ServiceSettings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hold(library: Path) -> Library:
    """The library opened for writing here, as another facefind process would."""
    return FaceFind(library).open_library(writable=True)


def facefind_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "facefind", *args]


def add_admin(library: Path) -> str:
    """An admin made as a user would (password on stdin) and an API key of theirs, from the key's output."""
    made = subprocess.run(facefind_command("--library", str(library), "users", "add", "--admin", "--password-stdin",
                                           "root"), input="a long admin password\n", capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    key = subprocess.run(facefind_command("--library", str(library), "keys", "create", "--user", "root",
                                          "--scope", "search", "--expires", "1d"), capture_output=True, text=True,
                         timeout=120)
    assert key.returncode == 0 and "cannot be shown again" in key.stderr, key.stderr
    return key.stdout.split()[-1]


def test_serve_refuses_to_start_without_an_admin_and_says_how_to_make_one(tmp_path):
    """No default credentials: a library without accounts is not served at all."""
    port = free_port()
    done = subprocess.run(facefind_command("serve", "--port", str(port), "--library", str(tmp_path / "lib")),
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"facefind --library {tmp_path / 'lib'} users add --admin NAME" in done.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "nothing listens"


def test_serve_answers_over_http_and_stops_cleanly_on_ctrl_c(tmp_path):
    key = add_admin(tmp_path / "lib")
    port = free_port()
    process = subprocess.Popen(
        facefind_command("serve", "--port", str(port), "--library", str(tmp_path / "lib"), "--allow-root", str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/api/v1/stats", timeout=5,
                                  headers={"Authorization": f"Bearer {key}"}).json()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.3)
        assert stats["files"] == 0 and Path(stats["library"]) == tmp_path / "lib"
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/stats").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/search").headers["location"] == "/login?next=%2Fsearch"
        assert httpx.get(f"http://127.0.0.1:{port}/login").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "serving" in out
    hold(tmp_path / "lib").close()  # the write lock was released


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow-root", "/no/such/folder"], "is not a folder"),
        (["--port", "70000"], "port"),
    ],
)
def test_serve_refuses_bad_options_without_a_traceback(tmp_path, args, message):
    done = subprocess.run(facefind_command("serve", "--library", str(tmp_path / "lib"), *args),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_serve_refuses_a_library_another_process_writes(tmp_path):
    add_admin(tmp_path / "lib")
    with hold(tmp_path / "lib"):
        done = subprocess.run(facefind_command("serve", "--library", str(tmp_path / "lib")),
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "another facefind process" in done.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True), ("0.0.0.0", False),
     ("192.168.1.5", False), ("::", False), ("example.org", False)],
)
def test_only_loopback_hosts_count_as_private(host, loopback):
    assert ServiceSettings(host=host).is_loopback() is loopback


def test_a_public_host_is_warned_about(tmp_path):
    """The warning is printed before anything binds; the library is held by this test so serve stops there."""
    with hold(tmp_path / "lib"):
        done = subprocess.run(facefind_command("serve", "--host", "0.0.0.0", "--library", str(tmp_path / "lib")),
                              capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert "warning: listening on 0.0.0.0" in done.stderr and done.returncode == 2


def test_a_kill_9_of_the_server_mid_searches_leaves_the_audit_chain_intact(tmp_path):
    """Searches keep arriving over HTTP while the server is killed outright: the audit log still verifies
    (`facefind audit verify`) and the next server's entries chain on from it."""
    from facefind.samples import probe_sample

    library = tmp_path / "lib"
    key = add_admin(library)
    probe = probe_sample().read_bytes()
    port = free_port()
    command = facefind_command("serve", "--port", str(port), "--library", str(library))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answered = 0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as client:
            deadline = time.monotonic() + 180
            while answered < 6 and time.monotonic() < deadline:
                try:
                    response = client.post("/api/v1/search", files={"file": ("p.jpg", probe, "image/jpeg")},
                                           data={"case": "CASE-9", "reason": "kill -9 test of the audit chain"})
                    assert response.status_code == 200, response.text
                    answered += 1
                except httpx.TransportError:
                    assert process.poll() is None, process.communicate()
                    time.sleep(0.3)
            killer = threading.Timer(0.05, process.send_signal, (signal.SIGKILL,))
            killer.start()
            with pytest.raises(httpx.TransportError):
                for _ in range(200):
                    client.post("/api/v1/search", files={"file": ("p.jpg", probe, "image/jpeg")},
                                data={"case": "CASE-9", "reason": "kill -9 test of the audit chain"})
            killer.join()
    finally:
        process.kill()
        process.wait()
    assert answered == 6
    verified = subprocess.run(facefind_command("--library", str(library), "audit", "verify"),
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0 and "Traceback" not in verified.stderr, verified.stdout + verified.stderr
    log = FaceFind(library).audit_log
    assert log.verify().entries >= 2 + 6  # the admin, their key, the answered searches
    log.append("after", "search", {})  # a new server's entries chain on from the head
    assert log.verify().intact
