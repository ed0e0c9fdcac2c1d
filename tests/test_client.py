"""The CLI through a running service (client.py): the same answers and errors as searching locally."""

import json
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from facefind import cli
from facefind.samples import gallery_samples, probe_sample
from facefind.service import ServiceSettings
from tests.conftest import PURPOSE
from tests.service.conftest import serve

STATED = ["--case", PURPOSE.case, "--reason", PURPOSE.reason]


@pytest.fixture(scope="module")
def served(tmp_path_factory, pipeline):
    """A real service on 127.0.0.1 over a library of the built-in gallery photos."""
    root = tmp_path_factory.mktemp("client")
    photos = root / "photos"
    photos.mkdir()
    for sample in gallery_samples():
        shutil.copy(sample, photos / sample.name)
    with serve(ServiceSettings(library=root / "library", index_workers=1), pipeline) as running:
        running.facefind.index([photos], workers=1)
        yield running


def invoke(args: list[str], served=None, key: str | None = "") -> tuple[int, str, str]:
    """Run the CLI in this process (through ``served`` when given): (exit code, stdout, stderr)."""
    env = {"FACEFIND_SERVICE": served.url if served else None,
           "FACEFIND_API_KEY": (key or served.key) if served and key is not None else None,
           "COLUMNS": "200"}
    library = ["--library", str(served.settings.library)] if served else []
    result = CliRunner().invoke(cli.app, [*library, *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def without_ids(answer: dict) -> dict:
    """A search answer less what differs between two runs of it: its id and the match ids made from it."""
    answer = {**answer, "search_id": None}
    answer["matches"] = [{**match, "match_id": None} for match in answer["matches"]]
    return answer


def test_search_through_the_service_answers_as_a_local_search(served):
    code, remote, _ = invoke(["search", str(probe_sample()), "--json", *STATED], served)
    assert code == 0
    code, local, _ = invoke(["--library", str(served.settings.library), "search", str(probe_sample()), "--json",
                             *STATED, "--service", ""])
    assert code == 0
    remote, local = json.loads(remote), json.loads(local)
    assert remote["matches"] and Path(remote["matches"][0]["source"]["path"]).name == "players.jpg"
    assert without_ids(remote) == without_ids(local)
    audited = served.facefind.audit_log.select()
    assert any(entry["action"] == "search" and entry["actor"] == "ivy" and entry["details"]["search_id"]
               == remote["search_id"] for entry in audited)  # the service searched, as the key's user


def test_verify_and_text_output_through_the_service(served):
    gdp = next(path for path in gallery_samples() if path.name == "gdp.jpg")
    code, remote, _ = invoke(["verify", str(probe_sample()), str(gdp), "--json", *STATED], served)
    assert code == 0
    code, local, _ = invoke(["--library", str(served.settings.library), "verify", str(probe_sample()), str(gdp),
                             "--json", *STATED, "--service", ""])
    assert json.loads(remote) == json.loads(local)
    code, text, _ = invoke(["search", str(probe_sample()), *STATED], served)
    assert code == 0 and "players.jpg" in text and "strong" in text


@pytest.mark.parametrize("case", ["no face", "missing file", "no purpose", "no key", "bad key", "no service"])
def test_errors_through_the_service_are_the_local_ones(served, tmp_path, case):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (200, 200, 200)).save(blank)
    args, key, expected = {
        "no face": ([str(blank), *STATED], "", f"no face found in {blank}"),
        "missing file": ([str(tmp_path / "gone.jpg"), *STATED], "", f"{tmp_path / 'gone.jpg'}"),
        "no purpose": ([str(probe_sample())], "", "every search states its purpose"),
        "no key": ([str(probe_sample()), *STATED], None, "set FACEFIND_API_KEY"),
        "bad key": ([str(probe_sample()), *STATED], "ffk_not_a_key", "key"),
        "no service": ([str(probe_sample()), *STATED, "--service", f"http://127.0.0.1:{free_port()}"], "",
                       "cannot reach the facefind service"),
    }[case]
    code, _, stderr = invoke(["search", *args], served, key)
    assert code == 2 and "Traceback" not in stderr
    assert expected in " ".join(stderr.split()), stderr
    if case in ("no face", "missing file"):  # word for word what the CLI says without a service
        code, _, local = invoke(["--library", str(served.settings.library), "search", *args, "--service", ""])
        assert code == 2 and " ".join(local.split()) == " ".join(stderr.split())


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
