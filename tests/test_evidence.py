import re

import pytest

from facefind.errors import FaceFindError, NotFoundError
from facefind.samples import probe_sample


def test_evidence_page_shows_both_faces_with_provenance(facefind, photo_folder, tmp_path):
    facefind.index([photo_folder], workers=1)
    match = facefind.search(probe_sample()).matches[0]
    page = facefind.export_evidence(match.match_id, tmp_path / "out" / "evidence.html").read_text()
    images = re.findall(r'src="data:image/png;base64,', page)
    assert len(images) == 6  # context, close-up and aligned crop, for probe and for match
    assert str(probe_sample().resolve()) in page and match.source.path in page
    assert match.source.sha256 in page
    assert f"{match.similarity:.4f}" in page
    assert "WARNING" not in page


def test_evidence_warns_when_the_source_changed(facefind, photo_folder, tmp_path):
    facefind.index([photo_folder], workers=1)
    match = facefind.search(probe_sample()).matches[0]
    with open(match.source.path, "ab") as handle:
        handle.write(b"appended bytes")
    page = facefind.export_evidence(match.match_id, tmp_path / "e.html").read_text()
    assert "changed since it was indexed" in page


def test_unknown_and_malformed_match_ids(facefind, tmp_path):
    with pytest.raises(FaceFindError, match="not a match id"):
        facefind.export_evidence("banana", tmp_path / "x.html")
    with pytest.raises(NotFoundError):
        facefind.export_evidence("99-1", tmp_path / "x.html")
