"""Hostile and careless input at ingest and probe time: damaged files, odd file types, huge files,
FIFOs, devices, names that are not UTF-8, truncated videos. Each case once crashed, hung or lied."""

from __future__ import annotations

import io
import json
import os
import resource
import sqlite3
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.conftest import PURPOSE, face_scene, write_video
from facefind.errors import FaceFindError
from facefind.files import path_from_text, path_to_text

GIB = 1 << 30


def _jpeg(rgb: np.ndarray, exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=92)
    data = buffer.getvalue()
    if exif is None:
        return data
    segment = b"Exif\x00\x00" + exif
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]


def _exif_block(*entries: tuple[int, int, int, bytes]) -> bytes:
    """A little-endian TIFF header and one IFD of raw (tag, type, count, 4-byte value) entries."""
    body = struct.pack("<H", len(entries))
    body += b"".join(struct.pack("<HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    return b"II*\x00\x08\x00\x00\x00" + body + b"\x00" * 68


_ROTATE = (0x0112, 3, 1, b"\x06\x00\x00\x00")  # orientation 6: Pillow rewrote the EXIF block to turn the image


def _jpeg_bad_exif_value_type(rgb: np.ndarray) -> bytes:
    """Make (0x010f) stored as a RATIONAL: Pillow's EXIF rewrite raised AttributeError."""
    return _jpeg(rgb, _exif_block(_ROTATE, (0x010F, 5, 1, b"\x00\x00\x00\x00")))


def _jpeg_bad_exif_offset(rgb: np.ndarray) -> bytes:
    """An interoperability IFD pointer stored as a BYTE: Pillow's EXIF rewrite raised struct.error."""
    return _jpeg(rgb, _exif_block(_ROTATE, (0xA005, 1, 1, b"\x00\x00\x00\x00")))


def _dds(rgb: np.ndarray) -> bytes:
    """A DDS header with a FourCC Pillow does not implement (NotImplementedError), named .jpg."""
    header = struct.pack("<7I", 124, 0x1007, 64, 64, 0, 0, 0) + b"\x00" * 44 + struct.pack("<2I", 32, 4) + b"XYZW"
    return b"DDS " + header + b"\x00" * 40 + b"\x00" * 4096


def _tiff_bad_strip_offsets(rgb: np.ndarray) -> bytes:
    """A TIFF whose StripOffsets tag is text: Pillow raised TypeError."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry : entry + 2])[0] == 273:
            data[entry + 2 : entry + 4] = struct.pack("<H", 2)  # ASCII instead of LONG
    return bytes(data)


def _float_tiff_grey(rgb: np.ndarray) -> bytes:
    """32-bit float greyscale (Pillow mode F), values 0-1: decoded black before."""
    buffer = io.BytesIO()
    grey = rgb.astype(np.float32).mean(axis=2) / 255.0
    Image.fromarray(grey, mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


def _float_tiff_rgb(rgb: np.ndarray) -> bytes:
    """32-bit float RGB, values 0-1: Pillow cannot identify it at all."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb.astype(np.float32) / 255.0, photometric="rgb")
    return buffer.getvalue()


def _float_tiff_hdr(rgb: np.ndarray) -> bytes:
    """32-bit float greyscale in an HDR range (-50 to 4000)."""
    buffer = io.BytesIO()
    grey = rgb.astype(np.float32).mean(axis=2) / 255.0 * 4050.0 - 50.0
    Image.fromarray(grey, mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


# name, builder, expected status, expected reason (None: indexed with the sample's face)
HOSTILE_IMAGES: list[tuple[str, Callable[[np.ndarray], bytes], str, str | None]] = [
    ("exif-type.jpg", _jpeg_bad_exif_value_type, "indexed", None),
    ("exif-offset.jpg", _jpeg_bad_exif_offset, "indexed", None),
    ("texture.jpg", _dds, "failed", "unsupported_format"),
    ("strips.tif", _tiff_bad_strip_offsets, "failed", "corrupt"),
    ("float-grey.tif", _float_tiff_grey, "indexed", None),
    ("float-rgb.tif", _float_tiff_rgb, "indexed", None),
    ("float-hdr.tif", _float_tiff_hdr, "indexed", None),
]


def _statuses(facefind) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(facefind.library_path / "catalog.sqlite3") as db:
        rows = db.execute("SELECT path, status, reason FROM media").fetchall()
    return {Path(path).name: (status, reason) for path, status, reason in rows}


def _last_run_status(facefind) -> str:
    with sqlite3.connect(facefind.library_path / "catalog.sqlite3") as db:
        return db.execute("SELECT status FROM ingest_log ORDER BY id DESC LIMIT 1").fetchone()[0]


@contextmanager
def _memory_capped(extra_bytes: int = 4 * GIB) -> Iterator[None]:
    """Cap this process's address space a little above its current size, so a regression that reads
    a huge file or /dev/zero whole fails with MemoryError instead of exhausting the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text()
    current = int(next(line for line in status.splitlines() if line.startswith("VmSize:")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (current + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _finishes(action: Callable[[], object], seconds: float = 60.0):
    """Run ``action`` in a thread; fail (instead of hanging the suite) if it blocks."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.parametrize("name,build,status,reason", HOSTILE_IMAGES, ids=[c[0] for c in HOSTILE_IMAGES])
def test_a_hostile_image_gets_its_own_outcome_and_the_run_goes_on(facefind, tmp_path, sample_rgb, name, build, status, reason):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_bytes(build(sample_rgb))
    (folder / "zz-good.jpg").write_bytes(_jpeg(sample_rgb))
    report = facefind.index([folder], workers=1)
    statuses = _statuses(facefind)
    assert statuses["zz-good.jpg"] == ("indexed", None)
    assert statuses[name] == (status, reason)
    assert report.faces_added == (2 if status == "indexed" else 1)
    assert _last_run_status(facefind) == "finished"


def test_any_exception_in_one_file_is_that_files_failure(facefind, tmp_path, sample_rgb, monkeypatch):
    """A decoder or model bug we do not know yet must cost one file, not the run."""
    import facefind.ingest as ingest_module

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(_jpeg(sample_rgb))
    real_decode = ingest_module.decode_image

    def explode_on_a(source, max_pixels):
        if isinstance(source, bytes) and source == (folder / "a.jpg").read_bytes() and not explode_on_a.done:
            explode_on_a.done = True
            raise KeyError("a decoder bug")
        return real_decode(source, max_pixels=max_pixels)

    explode_on_a.done = False
    monkeypatch.setattr(ingest_module, "decode_image", explode_on_a)
    report = facefind.index([folder], workers=1)
    assert [(Path(p).name, r) for p, r, _ in report.failures] == [("a.jpg", "analysis_failed")]
    assert "KeyError" in report.failures[0][2] and report.indexed == 1
    assert _last_run_status(facefind) == "finished"


def test_a_run_that_does_abort_is_logged_failed_not_finished(facefind, tmp_path, sample_rgb, monkeypatch):
    from facefind.library import Library

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(_jpeg(sample_rgb))

    def broken_commit(self, outcomes):
        raise RuntimeError("the catalog went away")

    monkeypatch.setattr(Library, "commit_outcomes", broken_commit)
    with pytest.raises(RuntimeError):
        facefind.index([folder], workers=1)
    assert _last_run_status(facefind) == "failed"


def test_a_large_file_is_streamed_and_gives_the_same_result(facefind, tmp_path, sample_rgb, monkeypatch):
    """Above the read-whole limit a file is decoded from its path and hashed in blocks."""
    import facefind.ingest as ingest_module

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(_jpeg(sample_rgb))
    monkeypatch.setattr(ingest_module, "READ_WHOLE_MAX_BYTES", 1000)
    report = facefind.index([folder], workers=1)
    assert report.indexed == 1 and report.faces_added == 1
    media = facefind.open_library().catalog.media_by_path(str(folder / "a.jpg"))
    import hashlib

    assert media.sha256 == hashlib.sha256((folder / "a.jpg").read_bytes()).hexdigest()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_a_sparse_8gb_file_named_jpg_is_refused_from_its_header(facefind, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    with open(folder / "huge.jpg", "wb") as handle:
        handle.truncate(8 * GIB)  # sparse: costs no disk
    before = _peak_rss_bytes()
    with _memory_capped():
        report = _finishes(lambda: facefind.index([folder], workers=1))
    assert [(Path(p).name, r) for p, r, _ in report.failures] == [("huge.jpg", "not_an_image")]
    assert _peak_rss_bytes() - before < 512 * 1024 * 1024


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".jpg"])
def test_a_fifo_in_an_indexed_folder_does_not_hang_index(facefind, tmp_path, sample_rgb, suffix):
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / f"pipe{suffix}")
    (folder / "good.jpg").write_bytes(_jpeg(sample_rgb))
    report = _finishes(lambda: facefind.index([folder], workers=1))
    assert [(Path(p).name, r) for p, r, _ in report.failures] == [(f"pipe{suffix}", "not_a_file")]
    assert report.indexed == 1


@pytest.mark.parametrize("probe", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("operation", ["search", "verify", "faces"])
def test_a_fifo_or_device_as_probe_is_refused_not_read(facefind, fifo, sample_rgb, tmp_path, probe, operation):
    path = fifo if probe == "fifo" else Path(probe)
    good = tmp_path / "good.jpg"
    good.write_bytes(_jpeg(sample_rgb))
    calls = {
        "search": lambda: facefind.search(path, purpose=PURPOSE),
        "verify": lambda: facefind.verify(good, path, purpose=PURPOSE),
        "faces": lambda: facefind.faces(path),
    }
    with pytest.raises(FaceFindError) as caught, _memory_capped():
        _finishes(calls[operation], seconds=30)
    assert caught.value.reason == "not_a_file"


def test_an_oversized_probe_is_refused_without_reading_it(facefind, tmp_path):
    probe = tmp_path / "huge.jpg"
    with open(probe, "wb") as handle:
        handle.truncate(8 * GIB)
    before = _peak_rss_bytes()
    with pytest.raises(FaceFindError) as caught, _memory_capped():
        facefind.search(probe, purpose=PURPOSE)
    assert caught.value.reason == "too_large" and "limit" in str(caught.value)
    assert _peak_rss_bytes() - before < 256 * 1024 * 1024


def test_names_that_are_not_utf8_are_indexed_and_searchable(facefind, tmp_path, sample_rgb):
    folder = tmp_path / "in"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")  # Latin-1, as an old camera or Windows share wrote it
    with open(odd, "wb") as handle:
        handle.write(_jpeg(sample_rgb))
    (folder / "other.jpg").write_bytes(_jpeg(np.ascontiguousarray(sample_rgb[:, ::-1])))
    report = facefind.index([folder], workers=1)
    assert report.indexed == 2 and report.failed == 0
    result = facefind.search(folder / "other.jpg", purpose=PURPOSE)
    paths = [match.source.path for match in result.matches]
    shown = str(folder / "caf\\xe9.jpg")
    assert shown in paths
    json.loads(result.model_dump_json())  # valid UTF-8 all the way out
    assert os.fsencode(path_from_text(shown)) == odd  # and back to the real file
    match = next(m for m in result.matches if m.source.path == shown)
    page = facefind.export_evidence(match.match_id, tmp_path / "evidence.html").read_text()
    assert "caf\\xe9.jpg" in page and "no longer readable" not in page  # the real file was reopened
    assert facefind.index([folder], workers=1).unchanged == 2  # re-runs recognise it


@pytest.mark.parametrize(
    "raw",
    [b"/x/caf\xe9.jpg", b"/x/back\\slash\xff.jpg", b"/x/plain.jpg", b"/x/caf\xc3\xa9.jpg", b"/x/lit\\x41\xe9"],
)
def test_path_text_form_is_valid_utf8_and_reversible(raw):
    path = os.fsdecode(raw)
    text = path_to_text(path)
    text.encode("utf-8")
    assert path_from_text(text) == path


# -- videos ---------------------------------------------------------------------------------------


def _remux(source: Path, target: Path, **options: str) -> Path:
    with av.open(str(source)) as reader, av.open(str(target), "w", options=options) as writer:
        stream = writer.add_stream_from_template(reader.streams.video[0])
        for packet in reader.demux(reader.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                writer.mux(packet)
    return target


@pytest.fixture
def face_clip(tmp_path, sample_rgb) -> Path:
    """4 s at 10 fps of the sample face over noise (noise so that the bytes spread over the footage)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(40):
        frame = face_scene(sample_rgb)
        frame[200:] = rng.integers(0, 255, frame[200:].shape, dtype=np.uint8)
        frames.append(frame)
    return write_video(tmp_path / "whole.mp4", frames)


def test_truncated_mp4_without_its_index_gets_a_clear_reason(facefind, face_clip, tmp_path):
    assert face_clip.read_bytes().rfind(b"moov") > len(face_clip.read_bytes()) // 2  # index at the end
    cut = tmp_path / "in" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(face_clip.read_bytes()[: face_clip.stat().st_size // 2])
    report = facefind.index([cut.parent], workers=1)
    (path, reason, message), = report.failures
    assert reason == "corrupt_video" and "truncated video: no index (moov) found" in message


def test_truncated_faststart_mp4_records_the_footage_it_holds(facefind, face_clip, tmp_path):
    fast = _remux(face_clip, tmp_path / "fast.mp4", movflags="faststart")
    assert fast.read_bytes().find(b"moov") < fast.read_bytes().find(b"mdat")  # index first
    cut = tmp_path / "in" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    report = facefind.index([cut.parent], workers=1)
    assert report.indexed == 1
    media = facefind.open_library().catalog.media_by_path(str(cut))
    assert 0.5 < media.duration_s < 3.0  # what decoded, not the header's 4 s
    assert media.message.startswith("truncated video: decoded")


def test_a_probe_whose_name_is_not_utf8_gives_valid_json(facefind, tmp_path, sample_rgb):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(_jpeg(sample_rgb))
    facefind.index([tmp_path / "in"], workers=1)
    odd = os.path.join(os.fsencode(tmp_path), b"probe-\xff.jpg")
    with open(odd, "wb") as handle:
        handle.write(_jpeg(sample_rgb))
    result = facefind.search(Path(os.fsdecode(odd)), purpose=PURPOSE)
    assert json.loads(result.model_dump_json())["probe_path"].endswith("probe-\\xff.jpg")
    assert facefind.faces(Path(os.fsdecode(odd))).model_dump_json()


def test_a_file_whose_name_is_not_utf8_can_be_removed(facefind, tmp_path, sample_rgb):
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(odd, "wb") as handle:
        handle.write(_jpeg(sample_rgb))
    facefind.index([Path(os.fsdecode(odd))], workers=1)
    assert facefind.faces(Path(os.fsdecode(odd))).indexed
    assert facefind.remove(Path(os.fsdecode(odd))) == 1
    assert facefind.stats()["faces"] == 0


def test_a_folder_tree_deeper_than_the_recursion_limit_is_walked(facefind, tmp_path, sample_rgb):
    """Discovery recursed once per folder level: 1,200 levels raised RecursionError and ended the run."""
    top = tmp_path / "in"
    top.mkdir()
    (top / "top.jpg").write_bytes(_jpeg(sample_rgb))
    levels = [top]
    try:
        for _ in range(1200):  # 2,400 characters: within PATH_MAX; made level by level (makedirs recurses too)
            levels.append(levels[-1] / "d")
            levels[-1].mkdir()
        (levels[-1] / "face.jpg").write_bytes(_jpeg(sample_rgb))
        report = facefind.index([top], workers=1)
        assert report.indexed == 2 and report.failed == 0
    finally:  # bottom-up by hand: pytest's own clean-up (shutil.rmtree) recurses and would fail on it
        (levels[-1] / "face.jpg").unlink(missing_ok=True)
        for level in reversed(levels[1:]):
            level.rmdir()


def test_a_socket_named_like_a_photo_is_not_a_file(facefind, tmp_path):
    import socket

    (tmp_path / "in").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "in" / "socket.jpg"))
        report = facefind.index([tmp_path / "in"], workers=1)
    assert [(Path(p).name, r) for p, r, _ in report.failures] == [("socket.jpg", "not_a_file")]
