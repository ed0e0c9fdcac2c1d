"""What the API, the CLI and the web UI show of watchlists and their hits (Pydantic, so /docs documents it)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

HIT_STATES = ("new", "acknowledged", "dismissed")
WEBHOOK_WAIT_S = 5.0  # how long a one-shot index waits for its webhooks before leaving them to the next run


class WatchEntry(BaseModel):
    entry_id: int
    label: str = Field(description="'person N' or the reference photo's name")
    person_id: int | None = None
    probe_sha256: str | None = Field(None, description="SHA-256 of the reference photo (the photo is not kept)")


class WatchlistInfo(BaseModel):
    watchlist_id: int
    name: str
    max_fmr: float = Field(description="A hit is raised only at or below this false match rate")
    visible_users: list[str]
    visible_roles: list[str]
    active: bool
    created_by: str
    created_at: datetime
    webhook_url: str | None = Field(None, description="Where hits are POSTed (the secret is never shown)")
    entries: list[WatchEntry]


class WatchDelivery(BaseModel):
    status: str = Field(description="pending, delivered, or failed (gave up after every retry)")
    attempts: int
    last_error: str | None = None


class WatchHit(BaseModel):
    hit_id: int
    watchlist_id: int
    watchlist: str
    entry: str = Field(description="Which entry of the watchlist the face matched")
    face_id: int
    similarity: float
    fmr: float
    fmr_is_bound: bool
    expected_false_matches: float = Field(description="FMR x the watchlist's templates compared")
    verdict: str
    quality: str = Field(description="The new face's quality verdict; a poor face never gives a strong hit")
    media_path: str
    media_sha256: str | None = None
    time_s: float | None = Field(None, description="Videos: when the face is shown")
    track_id: int | None = None
    thumbnail: str | None = None
    created_at: datetime
    state: str = Field(description="new, acknowledged, or dismissed (a wrong match)")
    decided_by: str | None = None
    decided_at: datetime | None = None
    delivery: WatchDelivery | None = None


class WatchHitPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[WatchHit]
