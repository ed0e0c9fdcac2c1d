import errno
import os
import re
from pathlib import Path

import pytest

from facefind import evidence
from facefind.errors import FaceFindError, NotFoundError
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def test_evidence_page_shows_both_faces_with_provenance(facefind, photo_folder, tmp_path):
    facefind.index([photo_folder], workers=1)
    match = facefind.search(probe_sample(), purpose=PURPOSE).matches[0]
    page = facefind.export_evidence(match.match_id, tmp_path / "out" / "evidence.html").read_text()
    images = re.findall(r'src="data:image/png;base64,', page)
    assert len(images) == 6  # context, close-up and aligned crop, for probe and for match
    assert str(probe_sample().resolve()) in page and match.source.path in page
    assert match.source.sha256 in page
    assert f"{match.similarity:.4f}" in page
    assert "WARNING" not in page


def test_evidence_says_who_ran_the_search_when_and_why(facefind, photo_folder, tmp_path):
    from facefind.access import Actor

    facefind.index([photo_folder], workers=1)
    investigator = Actor("ivy", "investigator", client_address="127.0.0.1")
    match = facefind.search(probe_sample(), purpose=PURPOSE, actor=investigator).matches[0]
    page = facefind.export_evidence(match.match_id, tmp_path / "e.html", actor=investigator).read_text()
    said = re.search(r'<p class="requested">(.*?)</p>', page).group(1)
    assert "ivy" in said and "investigator" in said and "127.0.0.1" in said
    assert PURPOSE.case in said and PURPOSE.reason.replace("'", "&#x27;") in said


def test_evidence_warns_when_the_source_changed(facefind, photo_folder, tmp_path):
    facefind.index([photo_folder], workers=1)
    match = facefind.search(probe_sample(), purpose=PURPOSE).matches[0]
    with open(match.source.path, "ab") as handle:
        handle.write(b"appended bytes")
    page = facefind.export_evidence(match.match_id, tmp_path / "e.html").read_text()
    assert "changed since it was indexed" in page


def test_unknown_and_malformed_match_ids(facefind, tmp_path):
    with pytest.raises(FaceFindError, match="not a match id"):
        facefind.export_evidence("banana", tmp_path / "x.html")
    with pytest.raises(NotFoundError):
        facefind.export_evidence("99-1", tmp_path / "x.html")


@pytest.mark.parametrize("match_id", ["99999999999999999999-1", "1-99999999999999999999", "0-1", "-1-1", "1-1-1",
                                      " 1-1", "1_0-1", "\uff11-1", "1-"])
def test_an_id_no_search_can_have_is_a_bad_argument(match_id):
    """Before: an id past SQLite's integers raised OverflowError; int() also took '1_0' and full-width digits."""
    with pytest.raises(FaceFindError, match="not a match id") as refused:
        evidence.parse_match_id(match_id)
    assert refused.value.reason == "bad_argument"


@pytest.fixture
def match_id(facefind, photo_folder) -> str:
    facefind.index([photo_folder], workers=1)
    return facefind.search(probe_sample(), purpose=PURPOSE).matches[0].match_id


@pytest.mark.parametrize("where", ["a folder", "under a file", "in /proc"])
def test_a_page_that_cannot_be_written_is_a_clear_error(where, facefind, match_id, tmp_path):
    """Before: a traceback (IsADirectoryError, NotADirectoryError, ...)."""
    (tmp_path / "file").write_text("x")
    out = {"a folder": tmp_path, "under a file": tmp_path / "file" / "page.html", "in /proc": Path("/proc/page.html")}
    with pytest.raises(FaceFindError, match="folder|cannot write") as refused:
        facefind.export_evidence(match_id, out[where])
    assert refused.value.reason == "cannot_write"


def test_a_failed_write_leaves_the_old_page_and_no_part_of_the_new(facefind, match_id, tmp_path, monkeypatch):
    page = tmp_path / "out" / "page.html"
    page.parent.mkdir()
    page.write_text("the page from before")

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evidence.os, "replace", disk_full)
    with pytest.raises(FaceFindError, match="No space left"):
        facefind.export_evidence(match_id, page)
    assert page.read_text() == "the page from before"
    assert [p.name for p in page.parent.iterdir()] == ["page.html"]  # no temporary file left


def test_a_name_that_is_not_utf8_still_gives_a_whole_page(facefind, photo_folder, tmp_path):
    """Before: UnicodeEncodeError after the file was opened, leaving a 0-byte page."""
    facefind.index([photo_folder], workers=1)
    probe = Path(os.fsdecode(os.fsencode(tmp_path) + b"/probe-\xe9.jpg"))
    probe.write_bytes(probe_sample().read_bytes())
    match = facefind.search(probe, purpose=PURPOSE).matches[0]
    page = facefind.export_evidence(match.match_id, tmp_path / "page.html").read_text()
    assert "probe-\\xe9.jpg" in page and page.count("data:image/png;base64,") == 6  # the name's text form



@pytest.mark.parametrize("fields,expected", [
    ({"fmr_text": "1 in 12.3k", "fmr_interval": [2.5e-5, 8.13e-5], "fmr_is_bound": False},
     "1 in 12.3k (95% interval 1 in 40.0k to 1 in 12.3k)"),
    ({"fmr_text": "< 1 in 176.0k", "fmr_interval": [0.0, 5.68e-6], "fmr_is_bound": True}, "< 1 in 176.0k"),
])
def test_the_page_shows_the_fmr_interval(fields, expected):
    assert evidence.fmr_with_interval(fields) == expected
