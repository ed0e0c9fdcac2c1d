"""End to end: run the installed CLI as a user would, in a temporary folder."""

import errno
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from facefind import cli
from facefind.api import FaceFind
from facefind.errors import FaceFindError
from facefind.pipeline import PipelineConfig
from facefind.samples import gallery_samples, probe_sample
from facefind.schema import FacesResponse, SearchResponse, VerifyResponse
from tests.conftest import PURPOSE

STATED = ("--case", PURPOSE.case, "--reason", PURPOSE.reason)  # the purpose every search and verify states


def run(library: Path, *args: str | bytes, check_code: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "facefind", "--library", str(library), *args],
        capture_output=True, text=True, errors="surrogateescape", timeout=300,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
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

    search = SearchResponse.model_validate_json(run(library, "search", *STATED, str(probe_sample()), "--json").stdout)
    assert Path(search.matches[0].source.path).name == "players.jpg"
    table = run(library, "search", *STATED, str(probe_sample())).stdout
    assert f"{search.search_id + 1}-1" in table and "players" in table  # every search gets its own id
    extrapolated = "FMR " + search.matches[0].fmr_text + " (extrapolated)"  # beyond the measured impostor pairs
    assert (extrapolated in table) == (search.matches[0].fmr_source == "tail_model")
    assert search.matches[0].fmr_source == "tail_model"  # the sample's best match scores beyond them

    page = tmp_path / "evidence.html"
    run(library, "export-evidence", search.matches[0].match_id, str(page))
    assert page.read_text().count("data:image/png;base64,") == 6

    faces = FacesResponse.model_validate_json(run(library, "faces", str(photo_folder / "gdp.jpg"), "--json").stdout)
    assert faces.indexed and len(faces.faces) == 5
    assert "5 face(s)" in run(library, "faces", str(photo_folder / "gdp.jpg")).stdout

    verify = VerifyResponse.model_validate_json(
        run(library, "verify", *STATED, str(probe_sample()), str(photo_folder / "players.jpg"),
            "--face-b", str(search.matches[0].face.face_index), "--json").stdout
    )
    assert verify.same_person

    again = json.loads(run(library, "index", str(photo_folder), "--json", check_code=1).stdout)
    assert again["unchanged"] == 2 and again["indexed"] == 0  # the broken file is retried, still broken

    assert "removed 5 face(s)" in run(library, "remove", str(photo_folder / "gdp.jpg")).stdout
    after = json.loads(run(library, "stats", "--json").stdout)
    assert after["faces"] == after["index_size"] == report["faces_added"] - 5


def test_clear_errors_instead_of_tracebacks(library, tmp_path, photo_folder):
    (tmp_path / "empty").mkdir()
    run(library, "index", str(tmp_path / "empty"))  # `index` makes the library
    wall = tmp_path / "wall.png"
    Image.new("RGB", (300, 200), (128, 128, 128)).save(wall)
    no_face = run(library, "search", *STATED, str(wall), check_code=2)
    assert "no face found" in no_face.stderr
    missing = run(library, "search", *STATED, str(tmp_path / "nope.jpg"), check_code=2)
    assert "no such file" in missing.stderr
    not_image = tmp_path / "fake.jpg"
    not_image.write_text("hello")
    assert "not a recognised image" in run(library, "verify", *STATED, str(not_image), str(wall), check_code=2).stderr
    for bad_id in ("x", "99999999999999999999-1", "1-1-1"):
        assert "not a match id" in run(library, "export-evidence", bad_id, str(tmp_path / "o.html"), check_code=2).stderr
    assert "is a folder" in run(library, "export-evidence", "1-1", str(tmp_path), check_code=2).stderr
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


def run_here(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (fast; lets a test plant a fault): exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exited:
        cli.run([str(arg) for arg in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return exited.value.code, captured.out, captured.err


# (arguments, the option the error must name); {photos} is a folder, {probe} a face photo.
BAD_NUMBERS = [
    (["--detection-size", "0", "index", "{photos}"], "detection_size"),
    (["--detection-size", "-640", "search", "{probe}"], "detection_size"),
    (["--max-pixels", "0", "index", "{photos}"], "max_pixels"),
    (["index", "{photos}", "--video-fps", "0"], "video_fps"),
    (["index", "{photos}", "--video-fps", "-1"], "video_fps"),
    (["index", "{photos}", "--video-fps", "nan"], "video_fps"),
    (["index", "{photos}", "--video-fps", "inf"], "video_fps"),
    (["index", "{photos}", "--workers", "-1"], "workers"),
    (["search", *STATED, "{probe}", "--top-k", "0"], "top_k"),
    (["search", *STATED, "{probe}", "--face", "-1"], "face"),
    (["search", *STATED, "{probe}", "--max-fmr", "nan"], "max_fmr"),
    (["search", *STATED, "{probe}", "--max-fmr", "0"], "max_fmr"),
    (["verify", *STATED, "{probe}", "{probe}", "--max-fmr", "nan"], "max_fmr"),
    (["verify", *STATED, "{probe}", "{probe}", "--max-fmr", "0"], "max_fmr"),
    (["verify", *STATED, "{probe}", "{probe}", "--max-fmr", "1.5"], "max_fmr"),
    (["verify", *STATED, "{probe}", "{probe}", "--max-fmr", "-inf"], "max_fmr"),
    (["verify", *STATED, "{probe}", "{probe}", "--face-b", "-2"], "face_b"),
    (["calibrate", "--lfw", "{photos}", "--workers", "-3"], "workers"),
]


@pytest.mark.parametrize("args, option", BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_a_bad_number_is_refused_before_any_work(args, option, capsys, library, photo_folder):
    """Before: detection size 0 indexed every file as no_face (never retried), video fps <= 0 looped
    forever, max-fmr NaN or 0 called identical photos different people."""
    filled = [a.format(photos=photo_folder, probe=probe_sample()) for a in args]
    code, out, err = run_here(capsys, "--library", library, *filled)
    assert code == 2 and f"{option} must be" in err, err
    assert not library.exists()  # refused at the door: no library made, nothing indexed


@pytest.mark.parametrize("call", [
    lambda lib: FaceFind(lib, PipelineConfig(detection_size=0)),
    lambda lib: FaceFind(lib, PipelineConfig(detection_threshold=float("nan"))),
    lambda lib: FaceFind(lib, max_pixels=-1),
    lambda lib: FaceFind(lib).index([lib], video_fps=float("nan")),
    lambda lib: FaceFind(lib).index([lib], workers=1.5),
    lambda lib: FaceFind(lib).search(probe_sample(), top_k=True, purpose=PURPOSE),
    lambda lib: FaceFind(lib).search(probe_sample(), max_fmr=float("inf"), purpose=PURPOSE),
    lambda lib: FaceFind(lib).verify(probe_sample(), probe_sample(), face_a=-1, purpose=PURPOSE),
])
def test_the_library_api_is_the_door_that_refuses(call, library):
    """The HTTP service calls the same API, so it gets the same refusals as the CLI."""
    with pytest.raises(FaceFindError, match="must be") as refused:
        call(library)
    assert refused.value.reason == "bad_argument"


def test_user_data_is_printed_as_plain_visible_text(library, tmp_path):
    """Before: `[/]` in a matched path crashed `search`, `[bold]` changed printed names, and escape
    sequences in file names reached the terminal."""
    folder = tmp_path / "photos"
    folder.mkdir()
    players, gdp = gallery_samples()
    matched = folder / "team[" / "]x[bold]\x1b[31m.jpg"  # the path holds `[/]`
    matched.parent.mkdir()
    other = folder / "gdp[bold]x[italic].jpg"
    broken = folder / "broken[red]\x1b]0;pwned\x07.jpg"
    matched.write_bytes(players.read_bytes())
    other.write_bytes(gdp.read_bytes())
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    library = tmp_path / "lib[blue]"

    def visible(path: Path) -> str:
        return str(path).replace("\x1b", "\\x1b").replace("\x07", "\\x07")

    indexed = run(library, "index", str(folder), check_code=1)
    assert visible(broken) in indexed.stderr
    search = run(library, "search", *STATED, str(probe_sample()))
    assert visible(matched) in search.stdout
    faces = run(library, "faces", str(other))
    assert visible(other) in faces.stdout
    stats = run(library, "stats")
    assert f"library: {library}" in stats.stdout
    missing = run(library, "search", *STATED, str(folder / "nope[bold]\x1b[2J.jpg"), check_code=2)
    assert visible(folder / "nope[bold]\x1b[2J.jpg") in missing.stderr
    for result in (indexed, search, faces, stats, missing):
        assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout + result.stderr


def test_a_name_that_is_not_utf8_is_shown_and_kept(capsys):
    """A byte that is not UTF-8 shows as the text \\xe9, on the terminal and in JSON (which strict parsers read)."""
    name = os.fsdecode(b"/photos/caf\xe9\x1b.jpg")
    assert cli._visible(name) == "/photos/caf\\xe9\\x1b.jpg"
    cli._print_json(FacesResponse(path=name, indexed=False, width=1, height=1, faces=[]))
    listed = FacesResponse.model_validate_json(capsys.readouterr().out)
    assert listed.path == "/photos/caf\\xe9\x1b.jpg"


@pytest.mark.parametrize("fault, code, message", [
    (RuntimeError("boom \x1b[2J"), 3, "internal error: RuntimeError: boom \\x1b[2J"),
    (OSError(errno.ENOSPC, "No space left on device"), 2, "error: the disk is full"),
    (FaceFindError("the catalog is damaged", reason="damaged_library"), 2, "error: the catalog is damaged"),
    (KeyboardInterrupt(), 130, ""),
])
def test_never_a_traceback(fault, code, message, capsys, monkeypatch, library, tmp_path):
    """Whatever goes wrong inside a command, the user gets one clear line and an exit code."""
    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(FaceFind, "stats", fail)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exit_code, _, err = run_here(capsys, "--library", library, "stats")
    assert exit_code == code and message in err
    reports = list(tmp_path.glob("facefind-error-*.txt"))
    if code == 3:
        assert f"Details are in {reports[0]}" in err
        assert "Traceback" in reports[0].read_text() and "boom" in reports[0].read_text()
    else:
        assert not reports


@pytest.mark.parametrize("command", [
    ["search", *STATED, "{probe}"], ["stats"], ["faces", "{probe}"], ["export-evidence", "1-1", "{out}"],
])
def test_read_only_commands_refuse_a_library_that_does_not_exist(command, library, tmp_path):
    """Before: a mistyped --library silently made an empty library and answered "No match", exit 0."""
    args = [a.format(probe=probe_sample(), out=tmp_path / "page.html") for a in command]
    refused = run(library, *args, check_code=2)
    assert "library" in refused.stderr.lower() and str(library) in refused.stderr
    assert not library.exists() and not (tmp_path / "page.html").exists()


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"irreplaceable")
    code, _, err = run_here(capsys, "demo", "--out", precious)
    assert code == 2 and "not an earlier demo" in err
    assert (precious / "holiday.jpg").read_bytes() == b"irreplaceable"



def test_a_search_without_a_purpose_names_both_options(capsys, library):
    for command in (["search", probe_sample()], ["verify", probe_sample(), probe_sample()],
                    ["search", probe_sample(), "--case", "C-1"]):
        code, _, err = run_here(capsys, "--library", library, *command)
        assert code == 2 and "--case" in err and "--reason" in err, err
    assert not library.exists()


def test_audit_verify_and_export(capsys, library, tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_here(capsys, "--library", library, "index", tmp_path / "empty")[0] == 0
    code, out, _ = run_here(capsys, "--library", library, "audit", "verify")
    assert code == 0 and "intact: 1 entries" in out
    code, out, _ = run_here(capsys, "--library", library, "audit", "export", "--format", "csv",
                            "--since", "2000-01-01", tmp_path / "audit.csv")
    assert code == 0 and "wrote 1 entries" in out and "index" in (tmp_path / "audit.csv").read_text()
    code, _, err = run_here(capsys, "--library", library, "audit", "export", "--since", "yesterday", tmp_path / "x")
    assert code == 2 and "--since" in err
    with sqlite3.connect(library / "audit.sqlite3") as db:
        db.execute("UPDATE entries SET actor = 'someone else' WHERE id = 1")
    code, _, err = run_here(capsys, "--library", library, "audit", "verify")
    assert code == 1 and "entry 1" in err and "edited" in err


def test_erase_a_person_from_the_command_line(capsys, library, photo_folder):
    assert run_here(capsys, "--library", library, "index", photo_folder, "--workers", "1")[0] == 0
    code, out, _ = run_here(capsys, "--library", library, "erase", "--person", probe_sample(), "--yes", "--opt-out")
    assert code == 0 and "erased 1 face(s)" in out and "blocked" in out, out
    code, out, _ = run_here(capsys, "--library", library, "search", *STATED, probe_sample())
    assert code == 0 and "players.jpg" not in out


def test_access_set_and_show(capsys, library, tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_here(capsys, "--library", library, "index", tmp_path / "empty")[0] == 0
    code, out, _ = run_here(capsys, "--library", library, "access", "set", "--user", "bob", "--role", "auditor",
                            "--min-reason", "15")
    assert code == 0 and "bob: auditor" in out and "15 characters" in out
    code, _, err = run_here(capsys, "--library", library, "access", "set", "--user", "bob", "--role", "boss")
    assert code == 2 and "unknown role" in err
    assert "bob: auditor" in run_here(capsys, "--library", library, "access", "show")[1]


def test_search_from_a_stored_face_id(tmp_path, pipeline, photo_folder, capsys):
    """`search --face-id`: where else does a face of the library appear? A probe photo and an id together are refused."""
    library = tmp_path / "lib"
    (photo_folder / "portrait.jpg").write_bytes(probe_sample().read_bytes())
    facefind = FaceFind(library)
    facefind._pipeline = pipeline
    facefind.index([photo_folder], workers=1)
    portrait = facefind.faces(photo_folder / "portrait.jpg").faces[0].face_id
    code, out, _ = run_here(capsys, "--library", library, "search", *STATED, "--face-id", portrait, "--json")
    result = SearchResponse.model_validate_json(out)
    assert code == 0 and result.searched_face.face_id == portrait
    assert [Path(m.source.path).name for m in result.matches] == ["players.jpg"]
    code, out, _ = run_here(capsys, "--library", library, "search", *STATED, "--face-id", portrait)
    assert code == 0 and f"Stored face {portrait}" in out and f"face {result.matches[0].face.face_id}" in out
    for both in ([str(probe_sample()), "--face-id", str(portrait)], []):
        code, _, err = run_here(capsys, "--library", library, "search", *STATED, *both)
        assert code == 2 and "either a PROBE photo (with --face N) or --face-id ID" in err
