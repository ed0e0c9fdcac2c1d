"""The shapes people operations answer with (JSON via Pydantic), shared by the CLI, HTTP API and web UI."""

from __future__ import annotations

from pydantic import BaseModel, Field

from facefind.schema import Face, Source, VideoHit

DEFAULT_PEOPLE_FMR = 1e-5  # people are linked only at this false match rate or lower


class Link(BaseModel):
    """A similarity between faces or people, with the false match rate it carries (standard table)."""

    similarity: float
    fmr: float
    fmr_text: str = Field(description="fmr as '1 in N' (with '<' when it is a bound)")


class NearestPerson(Link):
    person_id: int
    name: str | None


class PersonSummary(BaseModel):
    """One person: how many faces, where, how firmly they hang together, and who they could be confused with."""

    person_id: int
    name: str | None
    hidden: bool
    faces: int
    photos: int
    videos: int
    confirmed: bool = Field(description="True once someone acted on it: its faces are fixed for later runs")
    cohesion: Link | None = Field(None, description="The weakest link of its faces' spanning tree; None for one face")
    nearest: NearestPerson | None = Field(None, description="The closest other person: a merge to check")
    thumbnail: str | None = Field(None, description="A crop of one of its faces")


class PersonFace(BaseModel):
    face: Face
    source: Source
    video: VideoHit | None = None
    assigned_by: str = Field(description="auto (clustering) or manual (a person's decision, kept by re-runs)")


class PersonDetail(PersonSummary):
    face_list: list[PersonFace]


class BuildReport(BaseModel):
    kind: str = Field(description="build (every face) or incremental (new faces only)")
    faces: int = Field(description="Faces considered")
    people: int = Field(description="People after the run")
    assigned: int = Field(description="Faces in a person after the run")
    max_fmr: float
    seconds: float


class CoAppearance(BaseModel):
    """Another person seen in the same photos, or on screen at the same time in the same videos."""

    person_id: int
    name: str | None
    photos: list[str] = Field(description="Paths of the photos both appear in")
    videos: list[dict] = Field(description="{path, time_ranges}: when both are on screen together")
    count: int = Field(description="Photos plus video time ranges together")
