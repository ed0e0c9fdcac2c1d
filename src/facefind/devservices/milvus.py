"""Milvus standalone 2.3.5 from the ``milvus`` wheel, for development and tests (no docker).

The wheel carries the server binary (xz-compressed) and a config template. We extract the binary once
into a per-user cache, write the config for a fresh data folder with free loopback ports, and run
``milvus run standalone`` until the context manager exits, then stop it and (for a temporary folder)
delete its data.

Loopback: the embedded etcd (client and peer URLs) and every component's advertised address are
127.0.0.1, and the config points etcd clients at 127.0.0.1. Milvus 2.3.5 has no listen-address
setting for its gRPC and metrics ports, so those listen on every interface of the host: run it on a
machine (or container) whose other interfaces are firewalled, as CI does.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MILVUS_VERSION = "2.3.5"
START_TIMEOUT_S = 120.0
GRACEFUL_STOP_S = 5  # Milvus's own limit on a graceful stop (default 1800); its log keeps every acknowledged write anyway
STOP_TIMEOUT_S = GRACEFUL_STOP_S + 5.0
SESSION_TTL_S = 10  # default 30
QUICK_STOP_S = 3.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
STRONG_READ_TICK_MS = 50
# Components that advertise an address to the others; each gets 127.0.0.1 instead of the first
# non-loopback address Milvus would pick.
_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


@dataclass(frozen=True)
class MilvusServer:
    """A running local Milvus: ``uri`` is what pymilvus (and ``--index milvus://...``) connects to."""

    port: int
    data_dir: Path
    pid: int

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spec(self) -> str:
        """The index spec facefind takes: ``milvus://host:port``."""
        return f"milvus://127.0.0.1:{self.port}"


def cache_dir() -> Path:
    """Where the extracted server binary lives (shared by every data folder: 250 MB once, not per run)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "facefind" / f"milvus-{MILVUS_VERSION}"


def milvus_binary() -> Path:
    """The server binary, extracted from the installed wheel on first use (under a lock, so parallel
    test sessions do not write the same file at once)."""
    from milvus import __version__, _initialize_data_files

    if __version__ != MILVUS_VERSION:
        raise RuntimeError(f"facefind's dev Milvus expects the milvus wheel {MILVUS_VERSION}, found {__version__}")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _initialize_data_files(str(root))  # skips files whose recorded checksum matches
    return root / "bin" / "milvus"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1, chosen by the kernel."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_config(data_dir: Path) -> dict[str, int]:
    """Write ``configs/milvus.yaml`` (+ the embedded etcd's own file) for ``data_dir``; returns the ports
    chosen (``proxy_port`` is the client port, ``metrics_port`` serves /healthz)."""
    from milvus import MilvusServerConfig

    config = MilvusServerConfig(data_dir=str(data_dir))
    port_keys = [key for key in config.configurable_items if key.endswith("_port")]
    ports = dict(zip([*port_keys, "etcd_peer_port", "metrics_port"], free_ports(len(port_keys) + 2)))
    config.update(**{key: ports[key] for key in port_keys})
    etcd_config = data_dir / "configs" / "embedEtcd.yaml"
    for component in _COMPONENTS:
        config.set(f"{component}.ip", "127.0.0.1")
    config.set("log.level", "warn")
    # Strong reads (facefind's MilvusIndex) wait for the next time tick: 200 ms by default, 50 ms here.
    config.set("proxy.timeTickInterval", STRONG_READ_TICK_MS)
    config.set("common.gracefulStopTimeout", GRACEFUL_STOP_S)  # default 1800 s: a stop could outlast any test
    config.set("common.session.ttl", SESSION_TTL_S)  # a restart waits for the last run's sessions to expire
    # Rows not yet sealed are searched exhaustively (exact) instead of through a coarse IVF "interim" index
    # (nlist 128, nprobe 16) that misses close matches among the newest faces.
    config.set("queryNode.segcore.interimIndex.enableIndex", "false")
    config.resolve()  # writes configs/milvus.yaml with the ports and data paths
    yaml_path = data_dir / "configs" / "milvus.yaml"
    text = yaml_path.read_text(encoding="utf-8").replace("localhost:", "127.0.0.1:")
    embed = "  use:\n    embed: true"  # the template has no etcd.config.path entry: add one beside it
    if embed not in text:
        raise RuntimeError(f"unexpected Milvus config template: no {embed!r} in {yaml_path}")
    text = text.replace(embed, f"  config:\n    path: {etcd_config}\n{embed}", 1)
    yaml_path.write_text(text, encoding="utf-8")
    client, peer = f"http://127.0.0.1:{ports['etcd_port']}", f"http://127.0.0.1:{ports['etcd_peer_port']}"
    etcd_config.write_text(
        f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\ninitial-cluster: default={peer}\n",
        encoding="utf-8",
    )
    return ports


def _healthy(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2) as response:
            return b"OK" in response.read()
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def milvus_server(data_dir: Path | None = None) -> Iterator[MilvusServer]:
    """Run Milvus standalone on free loopback ports until the block ends.

    ``data_dir`` keeps the data (a dev server that survives restarts); without it a temporary folder
    is used and removed afterwards. Raises RuntimeError (with the log's tail) if it does not start.
    """
    binary = milvus_binary()
    temporary = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="facefind-milvus-")) if temporary else Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    process: subprocess.Popen | None = None
    try:
        ports = write_config(root)
        env = {
            **os.environ,
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(ports["metrics_port"]),
            "MILVUS_RUN_DIR": str(root / "run"),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(binary.parent), os.environ.get("LD_LIBRARY_PATH")])),
        }
        log_path = root / "logs" / "milvus-stdout.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(binary), "run", "standalone"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                start_new_session=True,  # a terminal's Ctrl-C reaches facefind, which then stops it in order
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(ports["metrics_port"]):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Milvus did not start (exit {process.poll()}); log tail:\n{tail}")
            time.sleep(0.2)
        yield MilvusServer(port=ports["proxy_port"], data_dir=root, pid=process.pid)
    finally:
        if process is not None:  # data about to be deleted needs no graceful flush
            stop_process(process, timeout=QUICK_STOP_S if temporary else STOP_TIMEOUT_S)
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def stop_process(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S,
                 signal_number: int = signal.SIGTERM) -> None:
    """``signal_number`` (SIGTERM: a server flushes and leaves), then SIGKILL if it has not gone in ``timeout``
    seconds."""
    if process.poll() is None:
        process.send_signal(signal_number)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def die_with_parent(signal_number: int = signal.SIGTERM) -> None:
    """In a server's child process before exec (after any change of user, which would clear it): have Linux
    send it ``signal_number`` when its parent (the test run, or `facefind dev-services`) dies, even by
    kill -9, so no server is ever left behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
