"""The documented, stable shapes of facefind's results (JSON via Pydantic).

Modelled on Rekognition's SearchFacesByImage (searched face, its box and
confidence, ranked face matches, model version) plus what facefind adds:
quality verdicts, landmarks, provenance (file hash) and evidence ids.
``docs/search-result.schema.json`` is generated from these models; a test
keeps it in step. Bump ``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

SCHEMA_VERSION = "2.0"


class BoundingBox(BaseModel):
    """Face box in pixels of the upright (EXIF-rotated) image."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_list(cls, box: list[float]) -> "BoundingBox":
        return cls(x1=box[0], y1=box[1], x2=box[2], y2=box[3])


class FaceQuality(BaseModel):
    """Measured quality signals and the verdict (good / fair / poor) with its reasons."""

    face_px: float = Field(description="Shorter side of the face box, pixels")
    eye_distance_px: float
    sharpness: float = Field(description="Variance of the Laplacian on the aligned 112x112 crop")
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    detection_score: float
    verdict: str = Field(description="good, fair or poor")
    reasons: list[str]
    lower_face_covered: bool | None = Field(None, description="Mask, scarf...; None when no classifier fits the model")
    lower_face_covered_score: float | None = None
    eyes_covered: bool | None = Field(None, description="Sunglasses, slit...: the face cannot support an identification")
    eyes_covered_score: float | None = None
    usable: bool = Field(True, description="False: not a face the recogniser can read (a false detection, eyes a"
                         " few pixels apart); never matched as strong or possible")
    feature_norm: float | None = Field(None, description="The recogniser's output norm before normalisation")
    upper_face_norm: float | None = Field(None, description="The same on the upper face (lower face masked), read"
                                          " where the whole face reads low: a masked face still reads there")


class Face(BaseModel):
    """One face in an image."""

    face_index: int = Field(description="Position among the image's faces, 0 = largest")
    face_id: int | None = Field(None, description="Catalog id, when the face is indexed")
    box: BoundingBox
    landmarks: list[list[float]] = Field(description="5 points: eyes, nose tip, mouth corners (x, y)")
    detection_score: float
    quality: FaceQuality
    thumbnail: str | None = Field(None, description="Aligned 112x112 crop on disk, if stored")


class Source(BaseModel):
    """Where a face was seen."""

    path: str
    sha256: str | None
    width: int | None
    height: int | None


class Calibrated(BaseModel):
    """What a score means, from the calibration table that fits the probe."""

    similarity: float = Field(description="Raw cosine similarity of the embeddings, -1..1")
    fmr: float = Field(description="False match rate: share of pairs of different people scoring at least this high")
    fmr_is_bound: bool = Field(description="True when the score is beyond what calibration data resolves: fmr is an upper bound")
    fmr_interval: list[float] = Field(
        description="[low, high] 95% identity-bootstrap interval of the FMR at this score; fmr is its high end"
                    " (on the evidence, not lower than the truth). [0, fmr] when fmr is a bound")
    fmr_source: str = Field(
        default="measured",
        description="measured: read off the impostor data; tail_model: extrapolated beyond it by the calibrated"
                    " tail model (conservative, checked out of sample); bound: beyond even that model's floor")
    fmr_text: str = Field(description="fmr as '1 in N' (with '<' when it is a bound)")
    fnmr: float = Field(description="Share of same-person pairs that score below this")
    verdict: str = Field(description="strong / possible / weak / not a match, by FMR (see README)")
    calibration_table: str


class VideoHit(BaseModel):
    """Where in a video the matched face's track appears."""

    track_id: int
    time_ranges: list[list[float]] = Field(description="[start_s, end_s] ranges in which the track is on screen")
    start_s: float
    end_s: float
    best_time_s: float = Field(description="Time of the track's best-quality frame")
    frame_time_s: float = Field(description="Time of the frame of the template that matched")
    frame_thumbnail: str | None = Field(None, description="The best frame, face boxed, on disk")


class Appearance(BaseModel):
    """Every matching track of one video, merged into time ranges."""

    path: str
    time_ranges: list[list[float]]
    tracks: list[int]
    best_similarity: float
    best_match_id: str
    verdict: str


class PersonRef(BaseModel):
    """The person of the people view (`facefind people`) a matched face belongs to."""

    person_id: int
    name: str | None
    photos: int = Field(description="Photos the person appears in")
    videos: int = Field(description="Videos the person appears in")


class FaceMatch(Calibrated):
    match_id: str = Field(description="SEARCH-RANK; pass to `facefind export-evidence`")
    rank: int
    expected_false_matches: float = Field(description="gallery_size x fmr: false matches this strong to expect in this gallery")
    within_limits: bool = Field(description="fmr <= max_fmr and expected_false_matches <= 1; others appear only with show_all")
    face: Face
    source: Source
    video: VideoHit | None = Field(None, description="Set when the source is a video")
    person: PersonRef | None = Field(None, description="The person this face is grouped into, if any")


class ProbeAssessment(BaseModel):
    """Whether the probe face can support an identification claim, and why not."""

    supports_identification: bool
    quality_verdict: str
    calibration_table: str
    notes: list[str]


class SearchResponse(BaseModel):
    schema_version: str = SCHEMA_VERSION
    search_id: int
    probe_path: str | None
    searched_face: Face
    faces_in_probe: list[Face] = Field(description="Every face found in the probe; pick another with --face N")
    gallery_size: int = Field(description="Faces in the index when the search ran")
    model_id: str
    top_k: int
    max_fmr: float = Field(description="Matches with a higher FMR are hidden unless show_all")
    show_all: bool
    probe_assessment: ProbeAssessment
    searched_in: str | None = Field(None, description="Only faces in this file or folder were compared")
    matches: list[FaceMatch] = Field(description="Best first; one per video track (its best template)")
    appearances: list[Appearance] = Field(description="Per video: the returned matches merged into time ranges")


class VerifyResponse(Calibrated):
    schema_version: str = SCHEMA_VERSION
    max_fmr: float
    same_person: bool = Field(description="fmr <= max_fmr and the probes support a claim")
    probe_assessment: ProbeAssessment = Field(description="Of the poorer of the two faces")
    face_a: Face
    face_b: Face
    model_id: str


class FacesResponse(BaseModel):
    schema_version: str = SCHEMA_VERSION
    path: str
    indexed: bool = Field(description="True when read from the catalog, False when detected just now")
    width: int | None
    height: int | None
    faces: list[Face]


# -- the service's shapes (HTTP API): listings, logs, jobs, evidence ----------------------------------


class MediaItem(BaseModel):
    """A file as the catalog remembers it: indexed, without a face, or failed with a reason."""

    path: str
    kind: str = Field(description="image or video")
    status: str = Field(description="indexed, no_face or failed")
    reason: str | None = Field(None, description="Why it is not indexed (the reason codes `facefind stats` counts)")
    message: str | None = None
    face_count: int
    width: int | None
    height: int | None
    duration_s: float | None = None
    sha256: str | None
    ingested_at: str


class MediaPage(BaseModel):
    total: int = Field(description="Files matching the filter, over all pages")
    offset: int
    limit: int
    items: list[MediaItem]


class SearchLogEntry(BaseModel):
    """One search of the log: what was searched, how, and how many results it returned."""

    search_id: int
    created_at: str
    probe_path: str | None = Field(description="None for an uploaded probe (its bytes are not kept)")
    probe_sha256: str
    face_index: int
    top_k: int
    max_fmr: float
    show_all: bool
    gallery_size: int
    searched_in: str | None
    results: int


class SearchLogPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[SearchLogEntry]


class IndexJob(BaseModel):
    """An index run in the service: progress while it runs, its report when it ends."""

    job_id: int
    paths: list[str]
    status: str = Field(description="running, finished, cancelled or failed")
    started_by: str = Field(description="The actor who started it")
    started_at: str
    finished_at: str | None = None
    total_files: int | None = Field(None, description="Files to process, known once discovery ends")
    files_done: int = 0
    faces: int = 0
    no_face: int = 0
    failed: int = 0
    files_per_s: float = 0.0
    current_file: str | None = None
    footage: str | None = Field(None, description="Progress within the video being read")
    error: str | None = None
    error_reason: str | None = None


class EvidenceResponse(Calibrated):
    """Probe and match of one search result, with the score calibrated as the search did (JSON of the evidence page)."""

    schema_version: str = SCHEMA_VERSION
    match_id: str
    search_id: int
    rank: int
    searched_at: str
    probe_path: str | None
    probe_sha256: str
    probe_face: Face
    face: Face
    source: Source
    video: VideoHit | None = None
    source_changed: bool | None = Field(None, description="True when the file's SHA-256 now differs; None if unreadable")


def json_schemas() -> dict:
    """JSON Schema of every response, as written to docs/search-result.schema.json."""
    return {
        "schema_version": SCHEMA_VERSION,
        "search": SearchResponse.model_json_schema(),
        "verify": VerifyResponse.model_json_schema(),
        "faces": FacesResponse.model_json_schema(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(json_schemas(), indent=2))
