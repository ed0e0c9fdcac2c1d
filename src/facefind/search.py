"""Search and verification: from probe pixels to ranked, provenance-carrying matches.

Every search is written to the catalog's search log (probe face, parameters,
ranked results): it is the audit trail, and it is what evidence export reads.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from facefind.access import under_any
from facefind.calibration import CalibrationSet, CalibrationTable
from facefind.calibration.table import format_fmr
from facefind.catalog import FaceRecord
from facefind.errors import (
    FaceFindError,
    NoFaceError,
    NotFoundError,
    UnreadableMediaError,
)
from facefind.files import path_to_text, read_probe
from facefind.library import Library, damaged_face_error
from facefind.pipeline import DetectedFace, FacePipeline
from facefind.pipeline.decode import decode_image
from facefind.pipeline.occlusion import combine_scores
from facefind.schema import (
    Appearance,
    BoundingBox,
    Face,
    FaceMatch,
    FaceQuality,
    ProbeAssessment,
    SearchResponse,
    Source,
    VerifyResponse,
    VideoHit,
)

DEFAULT_MAX_FMR = 1e-5
MERGE_GAP_S = 1.0
QUALITY_RANK = {"good": 0, "fair": 1, "poor": 2}


def reported_fmr(fmr: float) -> float:
    """An FMR as results report it, and as the search limits are checked: three significant digits."""
    return float(f"{fmr:.3g}")


def calibrated(table: CalibrationTable, similarity: float) -> dict:
    """The calibrated fields every score carries (see schema.Calibrated)."""
    evidence = table.evidence(similarity)
    return {
        "similarity": round(similarity, 4),
        "fmr": reported_fmr(evidence.fmr),
        "fmr_is_bound": evidence.fmr_is_bound,
        "fmr_interval": [float(f"{value:.3g}") for value in evidence.fmr_interval],
        "fmr_source": evidence.fmr_source,
        "fmr_text": format_fmr(evidence),
        "fnmr": round(evidence.fnmr, 4),
        "verdict": evidence.verdict,
        "calibration_table": table.name,
    }


def pair_table(calibration: CalibrationSet, probe_verdict: str, match_verdict: str, covered: bool) -> CalibrationTable:
    """The table a pair is scored with: a pair is only as good as its poorer face, and a covered probe
    always uses the covered table."""
    poorer = max(probe_verdict, match_verdict, key=QUALITY_RANK.__getitem__)
    return calibration.table_for(poorer, covered)


def assess_probe(face: DetectedFace | Face, table: CalibrationTable) -> ProbeAssessment:
    """A poor probe is still searched, but the result says the claim is weak and why.

    Poor covers a detection that is not a usable face and a covered face that shows too little
    (see quality.assess_quality); the tables cap such pairs' verdicts at 'weak' (table_for).
    """
    verdict = face.quality.verdict
    notes = []
    if not getattr(face.quality, "usable", True):
        notes.append("this detection is not a usable face: it cannot support an identification, and is never"
                     " matched as strong or possible")
    if face.quality.eyes_covered:
        notes.append("the eyes are covered: too little of the face shows to support an identification")
    if face.quality.lower_face_covered:
        notes.append(f"the lower face is covered: matched in masked mode ({table.match_mode}) with the calibration"
                     " for covered faces, whose uncertainty is wider")
    if verdict == "poor":
        notes.append("probe quality is poor (" + "; ".join(face.quality.reasons) + f"): scores use the wider"
                     f" '{table.name}' calibration, verdicts are at most 'weak', and they cannot support an"
                     " identification on their own")
    elif verdict == "fair":
        notes.append("probe quality is fair (" + "; ".join(face.quality.reasons) + ")")
    return ProbeAssessment(
        supports_identification=verdict != "poor",
        quality_verdict=verdict,
        calibration_table=table.name,
        notes=notes,
    )


def detected_to_face(face: DetectedFace, face_index: int) -> Face:
    return Face(
        face_index=face_index,
        box=BoundingBox.from_list([round(float(v), 2) for v in face.box]),
        landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
        detection_score=round(face.detection_score, 4),
        quality=FaceQuality(**face.quality.to_dict()),
    )


def record_to_face(record: FaceRecord, thumbs_dir: Path) -> Face:
    return Face(
        face_index=record.face_index,
        face_id=record.id,
        box=BoundingBox.from_list(record.box),
        landmarks=record.landmarks,
        detection_score=record.detection_score,
        quality=FaceQuality(**record.quality),
        thumbnail=str(thumbs_dir / record.thumbnail) if record.thumbnail else None,
    )


def probe_faces(pipeline: FacePipeline, data: bytes, name: str, max_pixels: int,
                masked_templates: bool | None = None) -> list[DetectedFace]:
    """Every face in a probe image, largest first; NoFaceError if there is none.

    A search passes ``masked_templates=False``: a probe is compared with the gallery's masked templates, never
    with its own, so embedding its faces masked too would double the recogniser's work for nothing.
    """
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except UnreadableMediaError as error:
        raise UnreadableMediaError(f"{name}: {error}", reason=error.reason) from None
    faces = pipeline.analyze(image.pixels, masked_templates=masked_templates)
    if not faces:
        raise NoFaceError(f"no face found in {name}; try a larger or sharper photo of the face")
    return faces


@dataclass(frozen=True)
class ProbeSeen:
    """What a search or verification saw of one probe, for the audit log: the SHA-256 of the very bytes
    analysed and the chosen face's aligned crop. Handing them back spares the caller a second read and
    decode of the probe (a few ms a search at 1M faces) and a file that changed in between."""

    sha256: str
    aligned: np.ndarray  # (112, 112, 3) uint8 RGB


def _name(probe: Path | bytes) -> str:
    return path_to_text(probe) if isinstance(probe, Path) else "the probe image"


def pick_face(faces: list[DetectedFace], face_index: int | None, label: str = "probe") -> int:
    """Index of the chosen face: the given one, or the largest (index 0)."""
    if face_index is None:
        return 0
    if not 0 <= face_index < len(faces):
        raise FaceFindError(
            f"--face {face_index} is out of range: the {label} has {len(faces)} face(s), numbered 0..{len(faces) - 1}",
            reason="bad_face_index",
        )
    return face_index


COVERED_WIDENING = 10  # a covered probe's mates score lower against plain embeddings: look further
# a restricted gallery this small is scored whole, larger ones re-query the index: bench/restricted.py (50k faces,
# median ms exact vs index: 56 vs 428 at 100 faces, 90 vs 173 at 1,000, 391 vs 187 at 5,000, 1264 vs 129 at 20,000)
EXACT_SCORING_MAX = 5_000


def restricted_gallery(library: Library, within: Path | None, readable: list[str] | None) -> set[int] | None:
    """The face ids a search may compare with, or None for the whole library.

    ``within`` (one file or folder) and ``readable`` (the actor's collections' roots) both narrow it;
    what lies outside is neither compared nor counted in the gallery size.
    """
    if within is None and readable is None:
        return None
    allowed: set[int] | None = None
    if readable is not None:
        allowed = {face_id for root in readable for face_id in library.catalog.face_ids_under(root)}
    if within is not None:
        inside = set(library.catalog.face_ids_under(str(within)))
        allowed = inside if allowed is None else allowed & inside
        if not allowed:
            raise NotFoundError(f"no indexed faces in {within}")
    return allowed


def _index_candidates(library: Library, embedding: np.ndarray, wanted: int, allowed: set[int] | None) -> list[int]:
    """Up to ``wanted`` candidate ids from the vector index (ascending), only ``allowed`` ones when given."""
    return sorted(face_id for face_id, _ in _index_scores(library, embedding, wanted, allowed))


def _index_scores(library: Library, embedding: np.ndarray, wanted: int,
                  allowed: set[int] | None) -> list[tuple[int, float]]:
    """Up to ``wanted`` (face id, index score) best first from the vector index, only ``allowed`` ones when given.

    The index ranks the whole library, so a restricted query is asked again for four times as many
    until enough allowed ids come back or the whole index was ranked: a small collection still gets
    its true matches however many faces of other collections score higher.
    """
    skipped = library.skipped_face_ids if allowed is None else library.skipped_face_ids & allowed
    if skipped:  # a face the index had to leave out could be the match: say so
        raise damaged_face_error(min(skipped))
    total, asked = len(library.index), wanted
    while True:
        scores, ids = library.index.search(embedding[None, :], min(asked, max(total, 1)))
        found = [(int(i), float(score)) for i, score in zip(ids[0], scores[0])
                 if i >= 0 and (allowed is None or int(i) in allowed)]
        if allowed is None or len(found) >= wanted or asked >= total:
            return found[:wanted]
        asked *= 4


def _proposed(
    library: Library, embedding: np.ndarray, top_k: int, within: Path | None, mode: str, readable: list[str] | None,
) -> tuple[list[tuple[int, float]], int, float]:
    """Like :func:`_candidates` plus the slack of the scores: a plain probe's candidates proposed by an index that
    bounds its scores' error (``score_slack``) keep the index's scores, to be re-scored exactly only where they
    could be reported (rank_and_log), instead of every candidate's embedding being read from the catalog."""
    slack = getattr(library.index, "score_slack", None)  # server indexes (pgvector, Milvus) say nothing of theirs
    if mode != "plain" or slack is None:
        return (*_candidates(library, embedding, top_k, within, mode, readable), 0.0)
    allowed = restricted_gallery(library, within, readable)
    if allowed is not None and len(allowed) <= EXACT_SCORING_MAX:  # scored whole, from the catalog
        return (*_candidates(library, embedding, top_k, within, mode, readable), 0.0)
    gallery_size = len(library.index) if allowed is None else len(allowed)
    return _index_scores(library, embedding, top_k * 4, allowed), gallery_size, float(slack)


def _candidates(
    library: Library, embedding: np.ndarray, top_k: int, within: Path | None, mode: str,
    readable: list[str] | None = None,
) -> tuple[list[tuple[int, float]], int]:
    """(face id, score) candidates best first, and the number of faces compared (the gallery size).

    ``mode`` says what the probe is compared with (see ``occlusion.combine_scores``): the gallery
    faces, their masked templates, or both combined. Over the whole library the vector index of the
    plain embeddings proposes candidates, which are then scored exactly from the catalog; a covered
    probe asks it for ``COVERED_WIDENING`` times more and re-scores them with the masked templates
    too (one index instead of a second one of masked templates: bench/scale.py measures the recall
    against scoring every face). Restricted to a file or
    folder, or to the actor's collections (``readable``), the gallery is those faces only: up to
    EXACT_SCORING_MAX of them are all scored, more are proposed by the index re-queried wider and
    filtered (bench/restricted.py measures both). Extra candidates are fetched because a video track
    contributes several templates and only its best one is kept. A face removed by another process
    between the index lookup and the catalog read is dropped; a damaged stored embedding (also one
    the index left out), or a score outside [-1, 1], is refused (DamagedLibraryError), never ranked.
    """
    allowed = restricted_gallery(library, within, readable)
    wanted = top_k * 4 * (1 if mode == "plain" else COVERED_WIDENING)
    if allowed is None:
        face_ids, gallery_size = _index_candidates(library, embedding, wanted, None), len(library.index)
    elif len(allowed) <= EXACT_SCORING_MAX:
        face_ids, gallery_size = sorted(allowed), len(allowed)
    else:
        face_ids, gallery_size = _index_candidates(library, embedding, wanted, allowed), len(allowed)
    if not face_ids:
        return [], gallery_size
    ids, vectors = library.embeddings(face_ids)
    plain = vectors @ embedding
    if mode == "plain":
        masked = plain
    else:  # faces without a masked template cannot be compared in this mode
        masked_ids, masked_vectors = library.embeddings(ids.tolist(), masked=True)
        keep = np.isin(ids, masked_ids)
        ids, plain, masked = ids[keep], plain[keep], masked_vectors @ embedding
    scores = combine_scores(plain, masked, mode)
    impossible = ~(np.abs(scores) <= 1.0 + 1e-3)  # unit vectors: anything else is damage
    if impossible.any():
        raise damaged_face_error(int(ids[np.argmax(impossible)]))
    order = np.argsort(-scores)[: top_k * 4]
    return [(int(ids[i]), float(scores[i])) for i in order], gallery_size


def search_library(
    library: Library,
    pipeline: FacePipeline,
    calibration: CalibrationSet,
    probe: Path | bytes,
    face_index: int | None = None,
    top_k: int = 10,
    max_fmr: float = DEFAULT_MAX_FMR,
    show_all: bool = False,
    max_pixels: int = 100_000_000,
    within: Path | None = None,
    requested_by: dict | None = None,
    readable: list[str] | None = None,
) -> tuple[SearchResponse, ProbeSeen]:
    """Rank the library's faces against one face of the probe, with calibrated scores; log the search.

    By default only matches within limits are returned: FMR at most ``max_fmr``
    and at most one false match that strong expected among the faces compared.
    ``show_all`` returns the top ``top_k`` whatever their scores, marked.
    ``within`` restricts the search to one file or folder (e.g. a video); ``readable`` to the root
    folders of the collections the actor may read (None: all), the gallery size counting only those.
    ``requested_by`` (who, in which role, from where, and the stated purpose) is kept with the
    search, so the evidence page of any of its matches says who ran it and why.
    """
    check_search_limits(top_k, max_fmr)
    data = read_probe(probe)
    faces = probe_faces(pipeline, data, _name(probe), max_pixels, masked_templates=False)
    chosen = pick_face(faces, face_index)
    probe_face = faces[chosen]
    probe_path = path_to_text(Path(probe).resolve()) if isinstance(probe, Path) else None
    seen = ProbeSeen(hashlib.sha256(data).hexdigest(), probe_face.aligned)
    looked_for = SearchProbe(probe_face.embedding, detected_to_face(probe_face, chosen),
                             [detected_to_face(f, i) for i, f in enumerate(faces)], probe_path, seen.sha256)
    return rank_and_log(library, calibration, looked_for, pipeline.model_id, top_k, max_fmr, show_all, within,
                        requested_by, readable), seen


@dataclass(frozen=True)
class SearchProbe:
    """The face a search looks for, analysed from a photo or read from the catalog (a stored face)."""

    embedding: np.ndarray
    searched: Face
    faces: list[Face]  # every face of the probe photo; a stored face: itself
    path: str | None
    sha256: str | None
    face_id: int | None = None  # a stored face: it, and the other templates of its video track, are not matches
    track_id: int | None = None

    def is_itself(self, record: FaceRecord) -> bool:
        return record.id == self.face_id or (
            self.track_id is not None and record.track is not None and record.track.id == self.track_id)


def stored_face_probe(library: Library, face_id: int, readable: list[str] | None) -> SearchProbe:
    """A stored face as a probe ("where else does this face appear?"): its stored embedding, no pixels analysed.

    A face outside the actor's collections (``readable``) is reported as missing, like one that does not exist,
    so a face id reveals nothing of a collection one may not read.
    """
    record = library.catalog.faces([face_id]).get(face_id)
    if record is None or (readable is not None and not under_any(record.path, readable)):
        raise NotFoundError(f"no face {face_id} in the library (face ids are listed by `facefind faces` and in"
                            " search results)")
    ids, vectors = library.embeddings([face_id])
    if len(ids) == 0:
        raise NotFoundError(f"face {face_id} was removed while it was being read")
    searched = record_to_face(record, library.thumbs_dir)
    return SearchProbe(vectors[0], searched, [searched], record.path, record.sha256, face_id,
                       record.track.id if record.track is not None else None)


def rank_and_log(
    library: Library, calibration: CalibrationSet, probe: SearchProbe, model_id: str, top_k: int = 10,
    max_fmr: float = DEFAULT_MAX_FMR, show_all: bool = False, within: Path | None = None,
    requested_by: dict | None = None, readable: list[str] | None = None,
) -> SearchResponse:
    """The library's faces ranked against ``probe`` with calibrated scores, the search logged (search_library)."""
    check_search_limits(top_k, max_fmr)
    within = Path(os.path.abspath(within)) if within is not None else None
    quality = probe.searched.quality
    covered = bool(quality.lower_face_covered)
    table = calibration.table_for(quality.verdict, covered)
    asked = top_k + (1 if probe.face_id is not None else 0)  # a stored face finds itself first
    candidates, gallery_size, slack = _proposed(library, probe.embedding, asked, within, table.match_mode, readable)
    # the tables a match may be scored with (by its quality); FMR falls as the score rises, so once a score is out
    # of limits with a table, every lower one is too: past the point where it is with all of them, nothing is read
    live_tables = {t.name: t for t in (pair_table(calibration, quality.verdict, v, covered) for v in QUALITY_RANK)}
    reportable, seen_tracks = [], set()
    for face_id, score, record in _with_records(library, candidates, top_k + 2):  # best first
        if show_all:
            if len(reportable) >= top_k and score + slack < reportable[top_k - 1][1] - slack:
                break  # cannot reach the k-th best listed so far
        else:
            bound = min(score + slack, 1.0)
            live_tables = {name: t for name, t in live_tables.items()
                           if within_limits(reported_fmr(t.evidence(bound).fmr), gallery_size, max_fmr)[1]}
            if not live_tables:
                break
        if record is None or probe.is_itself(record):
            continue
        if record.track is not None:
            if record.track.id in seen_tracks:
                continue  # a weaker template of a track already listed
            seen_tracks.add(record.track.id)
        pair = pair_table(calibration, quality.verdict, record.quality["verdict"], covered)
        if show_all or pair.name in live_tables:
            reportable.append((record, score, pair))
    if slack:
        reportable = _scored_exactly(library, probe.embedding, reportable)
    hits = []
    for record, score, pair in reportable:
        fields = calibrated(pair, score)
        if show_all or within_limits(fields["fmr"], gallery_size, max_fmr)[1]:
            hits.append((record, score, fields))
        if len(hits) == top_k:
            break
    logged_probe = {"path": probe.path, "sha256": probe.sha256, "face": probe.searched.model_dump()}
    if probe.face_id is not None:
        logged_probe["face_id"] = probe.face_id
    search_id = library.catalog.record_search(
        probe=logged_probe,
        embedding=probe.embedding,
        params={"top_k": top_k, "max_fmr": max_fmr, "show_all": show_all, "gallery_size": gallery_size,
                "calibration_table": table.name, "within": str(within) if within else None,
                "collections_roots": readable,
                "requested_by": requested_by},
        results=[(record.id, score) for record, score, *_ in hits],
    )
    matches = [
        face_match(search_id, rank, record, fields, gallery_size, max_fmr, library.thumbs_dir)
        for rank, (record, _score, fields) in enumerate(hits, start=1)
    ]
    return SearchResponse(
        search_id=search_id,
        probe_path=probe.path,
        searched_face=probe.searched,
        faces_in_probe=probe.faces,
        gallery_size=gallery_size,
        model_id=model_id,
        top_k=top_k,
        max_fmr=max_fmr,
        show_all=show_all,
        probe_assessment=assess_probe(probe.searched, table),
        searched_in=str(within) if within else None,
        matches=matches,
        appearances=appearances(matches),
    )


def _with_records(library: Library, candidates: list[tuple[int, float]], chunk: int) -> Iterator[tuple]:
    """(face id, score, catalog record or None if removed meanwhile) best first, the records read ``chunk`` at a
    time as the caller goes on: at 1M faces each is a few scattered catalog pages, and most are never needed."""
    for start in range(0, len(candidates), chunk):
        part = candidates[start : start + chunk]
        records = library.catalog.faces([face_id for face_id, _ in part])
        for face_id, score in part:
            yield face_id, score, records.get(face_id)


def _scored_exactly(library: Library, embedding: np.ndarray, reportable: list[tuple]) -> list[tuple]:
    """``reportable`` (record, index score, table) re-scored with the stored embeddings, best first.

    An index score is within the index's ``score_slack`` of the exact one, so what rank_and_log left out
    could not be reported; only these few embeddings are read (at 1M faces, scattered catalog pages).
    A face removed meanwhile is dropped; a damaged stored embedding is refused, never ranked.
    """
    if not reportable:
        return []
    ids, vectors = library.embeddings([record.id for record, *_ in reportable])
    exact = dict(zip(ids.tolist(), (vectors @ embedding).tolist()))
    for face_id, score in exact.items():
        if not abs(score) <= 1.0 + 1e-3:  # unit vectors: anything else is damage
            raise damaged_face_error(face_id)
    rescored = [(record, exact[record.id], pair) for record, _, pair in reportable if record.id in exact]
    return sorted(rescored, key=lambda item: -item[1])


def check_search_limits(top_k: int, max_fmr: float) -> None:
    if top_k < 1:
        raise FaceFindError("--top-k must be at least 1", reason="bad_argument")
    if not 0 < max_fmr <= 1:
        raise FaceFindError("--max-fmr must be in (0, 1], e.g. 1e-5", reason="bad_argument")


def within_limits(fmr: float, gallery_size: int, max_fmr: float) -> tuple[float, bool]:
    """False matches this strong expected among the faces compared, and whether the match is within the
    search's limits (FMR at most ``max_fmr`` and at most one such false match expected)."""
    expected = gallery_size * fmr
    return expected, fmr <= max_fmr and expected <= 1.0


def face_match(
    search_id: int, rank: int, record: FaceRecord, fields: dict, gallery_size: int, max_fmr: float, thumbs_dir: Path
) -> FaceMatch:
    """One ranked match as a search (or a reopened search) reports it."""
    expected, inside = within_limits(fields["fmr"], gallery_size, max_fmr)
    return FaceMatch(
        match_id=f"{search_id}-{rank}",
        rank=rank,
        **fields,
        expected_false_matches=float(f"{expected:.3g}"),
        within_limits=inside,
        face=record_to_face(record, thumbs_dir),
        source=Source(path=record.path, sha256=record.sha256, width=record.media_width, height=record.media_height),
        video=video_hit(record, thumbs_dir),
    )


def video_hit(record: FaceRecord, thumbs_dir: Path) -> VideoHit | None:
    track = record.track
    if track is None:
        return None
    return VideoHit(
        track_id=track.id,
        time_ranges=track.time_ranges,
        start_s=track.time_ranges[0][0],
        end_s=track.time_ranges[-1][1],
        best_time_s=track.best_time_s,
        frame_time_s=record.frame_time_s if record.frame_time_s is not None else track.best_time_s,
        frame_thumbnail=str(thumbs_dir / track.frame_thumbnail) if track.frame_thumbnail else None,
    )


def merge_ranges(ranges: list[list[float]], gap_s: float = MERGE_GAP_S) -> list[list[float]]:
    """Union of time ranges, joining those less than ``gap_s`` apart."""
    merged: list[list[float]] = []
    for start, end in sorted(ranges):
        if merged and start - merged[-1][1] <= gap_s:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def appearances(matches: list[FaceMatch]) -> list[Appearance]:
    """Group the within-limits video matches by file, with their tracks' time ranges merged."""
    by_path: dict[str, list[FaceMatch]] = {}
    for match in matches:
        if match.video is not None and match.within_limits:
            by_path.setdefault(match.source.path, []).append(match)
    result = []
    for path, group in by_path.items():
        best = max(group, key=lambda m: m.similarity)
        result.append(Appearance(
            path=path,
            time_ranges=merge_ranges([r for m in group for r in m.video.time_ranges]),
            tracks=[m.video.track_id for m in group],
            best_similarity=best.similarity,
            best_match_id=best.match_id,
            verdict=best.verdict,
        ))
    return result


def verify_pair(
    pipeline: FacePipeline,
    calibration: CalibrationSet,
    probe_a: Path | bytes,
    probe_b: Path | bytes,
    face_a: int | None = None,
    face_b: int | None = None,
    max_fmr: float = DEFAULT_MAX_FMR,
    max_pixels: int = 100_000_000,
) -> tuple[VerifyResponse, ProbeSeen, ProbeSeen]:
    """Compare one face of A with one face of B; the poorer face decides which calibration applies."""
    data_a, data_b = read_probe(probe_a), read_probe(probe_b)
    faces_a = probe_faces(pipeline, data_a, _name(probe_a), max_pixels)
    faces_b = probe_faces(pipeline, data_b, _name(probe_b), max_pixels)
    index_a, index_b = pick_face(faces_a, face_a, "first image"), pick_face(faces_b, face_b, "second image")
    a, b = faces_a[index_a], faces_b[index_b]
    poorer = max(a, b, key=lambda f: QUALITY_RANK[f.quality.verdict])
    covered = next((f for f in (a, b) if f.quality.lower_face_covered), None)
    table = calibration.table_for(poorer.quality.verdict, covered is not None)
    plain = np.float32(np.dot(a.embedding, b.embedding))
    score = plain
    if covered is not None:  # the covered face against the other face and its masked template
        other = b if covered is a else a
        if other.masked_embedding is not None:
            score = combine_scores(plain, np.float32(np.dot(covered.embedding, other.masked_embedding)), table.match_mode)
    fields = calibrated(table, float(score))
    assessment = assess_probe(covered or poorer, table)
    return VerifyResponse(
        **fields,
        max_fmr=max_fmr,
        same_person=fields["fmr"] <= max_fmr and assessment.supports_identification,
        probe_assessment=assessment,
        face_a=detected_to_face(faces_a[index_a], index_a),
        face_b=detected_to_face(faces_b[index_b], index_b),
        model_id=pipeline.model_id,
    ), ProbeSeen(hashlib.sha256(data_a).hexdigest(), a.aligned), ProbeSeen(hashlib.sha256(data_b).hexdigest(), b.aligned)
