"""End to end: run the installed CLI as a user would, in a temporary folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from facefind.samples import probe_sample
from facefind.schema import FacesResponse, SearchResponse, VerifyResponse


def run(library: Path, *args: str, check_code: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "facefind", "--library", str(library), *args],
        capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    if check_code is not None:
        assert result.returncode == check_code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
def library(tmp_path) -> Path:
    return tmp_path / "lib"


def test_a_users_session(library, photo_folder, tmp_path):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    indexed = run(library, "index", str(photo_folder), "--json", check_code=1)  # 1: a file failed
    report = json.loads(indexed.stdout)
    assert report["indexed"] == 2 and report["failed"] == 1
    assert report["failures"][0]["reason"] == "corrupt"

    stats = json.loads(run(library, "stats", "--json").stdout)
    assert stats["faces"] == stats["index_size"] == report["faces_added"]
    assert stats["unindexed_by_reason"] == {"corrupt": 1}
    assert "corrupt" in run(library, "stats").stdout

    search = SearchResponse.model_validate_json(run(library, "search", str(probe_sample()), "--json").stdout)
    assert Path(search.matches[0].source.path).name == "players.jpg"
    table = run(library, "search", str(probe_sample())).stdout
    assert f"{search.search_id + 1}-1" in table and "players" in table  # every search gets its own id

    page = tmp_path / "evidence.html"
    run(library, "export-evidence", search.matches[0].match_id, str(page))
    assert page.read_text().count("data:image/png;base64,") == 6

    faces = FacesResponse.model_validate_json(run(library, "faces", str(photo_folder / "gdp.jpg"), "--json").stdout)
    assert faces.indexed and len(faces.faces) == 5
    assert "5 face(s)" in run(library, "faces", str(photo_folder / "gdp.jpg")).stdout

    verify = VerifyResponse.model_validate_json(
        run(library, "verify", str(probe_sample()), str(photo_folder / "players.jpg"),
            "--face-b", str(search.matches[0].face.face_index), "--json").stdout
    )
    assert verify.same_person

    again = json.loads(run(library, "index", str(photo_folder), "--json", check_code=1).stdout)
    assert again["unchanged"] == 2 and again["indexed"] == 0  # the broken file is retried, still broken

    assert "removed 5 face(s)" in run(library, "remove", str(photo_folder / "gdp.jpg")).stdout
    after = json.loads(run(library, "stats", "--json").stdout)
    assert after["faces"] == after["index_size"] == report["faces_added"] - 5


def test_clear_errors_instead_of_tracebacks(library, tmp_path, photo_folder):
    wall = tmp_path / "wall.png"
    Image.new("RGB", (300, 200), (128, 128, 128)).save(wall)
    no_face = run(library, "search", str(wall), check_code=2)
    assert "no face found" in no_face.stderr
    missing = run(library, "search", str(tmp_path / "nope.jpg"), check_code=2)
    assert "no such file" in missing.stderr
    not_image = tmp_path / "fake.jpg"
    not_image.write_text("hello")
    assert "not a recognised image" in run(library, "verify", str(not_image), str(wall), check_code=2).stderr
    assert "not a match id" in run(library, "export-evidence", "x", str(tmp_path / "o.html"), check_code=2).stderr
    assert "not in the library" in run(library, "remove", str(photo_folder / "gdp.jpg"), check_code=2).stderr


def test_help_teaches(library):
    top = run(library, "--help").stdout
    for command in ("index", "search", "verify", "faces", "stats", "remove", "export-evidence", "demo"):
        assert command in top
    assert "resumes" in run(library, "index", "--help").stdout


def test_demo_runs_on_built_in_samples(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "facefind", "demo", "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "players.jpg" in result.stdout
    assert (tmp_path / "demo" / "evidence.html").is_file()
