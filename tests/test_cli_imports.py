"""The CLI starts light: `facefind --help` and a `--service` search must not load the models, FAISS or OpenCV.

Each check runs in a fresh interpreter, since this test session has long imported everything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ["onnxruntime", "faiss", "cv2", "numpy", "fastapi", "dask", "pymilvus", "sqlalchemy", "psycopg",
         "facefind.api", "facefind.pipeline", "facefind.search", "facefind.library"]


def _imported_by(module: str) -> set[str]:
    """The modules a fresh interpreter has loaded after importing ``module``."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("face", ["facefind.cli", "facefind.client"])
def test_the_cli_and_its_service_client_import_nothing_heavy(face: str) -> None:
    assert not set(HEAVY) & _imported_by(face)


def test_a_local_search_imports_no_people_watchlist_or_http_code() -> None:
    """A one-off `facefind search` imports the API: SQLAlchemy (people), networkx, httpx (webhooks, --service),
    onnx (SFace repair), PyAV's frame reader for evidence and tifffile cost ~0.5 s it does not need."""
    loaded = _imported_by("facefind.api") | _imported_by("facefind.cli")
    assert not {"sqlalchemy", "networkx", "httpx", "onnx", "tifffile", "facefind.check"} & loaded


def test_restated_defaults_equal_the_real_ones() -> None:
    from facefind import cli
    from facefind.pipeline.decode import DEFAULT_MAX_PIXELS
    from facefind.search import DEFAULT_MAX_FMR

    assert (cli.DEFAULT_MAX_PIXELS, cli.DEFAULT_MAX_FMR) == (DEFAULT_MAX_PIXELS, DEFAULT_MAX_FMR)


def test_importing_accounts_hashes_no_password() -> None:
    """The dummy hash (for logins with an unknown name) costs ~0.4 s: made on first use, not at every start."""
    code = ("import argon2\n"
            "calls = []\n"
            "real = argon2.PasswordHasher.hash\n"
            "argon2.PasswordHasher.hash = lambda self, *a, **k: calls.append(1) or real(self, *a, **k)\n"
            "import facefind.cli, facefind.accounts\n"
            "print(len(calls))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "0"
