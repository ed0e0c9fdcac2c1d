"""Watchlist checks after every ingest commit, and signed webhook deliveries that survive failures.

Every face a commit adds (photos and video track templates alike) is compared with the templates
of every active watchlist: stored reference-photo embeddings, and the current faces of listed
people. A hit needs the calibrated FMR at or below the watchlist's ``max_fmr`` and at most one
false match that strong expected among the templates compared, the rule a search uses. Webhooks
are sent from a background thread, so a slow or dead receiver never holds up an ingest; their
state is stored, so one that failed is retried with back-off, also after a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from typing import Callable

import httpx
import numpy as np

from facefind.calibration import CalibrationSet
from facefind.catalog.base import CommitResult
from facefind.errors import NotFoundError
from facefind.library import Library
from facefind.search import calibrated, pair_table, within_limits
from facefind.watchlists.store import Watchlist, WatchStore, now

SIGNATURE_HEADER = "X-Facefind-Signature"  # "sha256=" + hex HMAC-SHA256 of the body with the watchlist's secret
RETRY_BASE_S = 2.0  # the n-th retry waits RETRY_BASE_S * 2**(n-1), capped at RETRY_MAX_WAIT_S
RETRY_MAX_WAIT_S = 3600.0
MAX_ATTEMPTS = 10  # then the delivery is marked failed (visible with its hit)
POST_TIMEOUT_S = 5.0

PersonFaces = Callable[[int], list[int]]  # person id -> the catalog face ids of that person now


def signature(secret: str, body: bytes) -> str:
    """The value of SIGNATURE_HEADER: a receiver recomputes it to know the hit came from this library."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _templates(library: Library, watchlist: Watchlist, person_faces: PersonFaces
               ) -> tuple[np.ndarray, list[int], list[str], list[int | None]]:
    """(vectors, entry id, quality verdict, face id or None) of every template of a watchlist, row by row."""
    vectors, entry_ids, qualities, face_ids = [], [], [], []
    for entry in watchlist.entries:
        if entry.embedding is not None:
            vectors.append(entry.embedding[None, :])
            entry_ids.append(entry.entry_id)
            qualities.append(entry.quality or "good")
            face_ids.append(None)
        elif entry.person_id is not None:
            try:
                listed = person_faces(entry.person_id)
            except NotFoundError:  # the person was erased (or merged away) since: nothing left to compare
                continue
            ids, found = library.embeddings(listed)
            records = library.catalog.faces([int(i) for i in ids])
            for face_id, vector in zip(ids.tolist(), found):
                if face_id in records:
                    vectors.append(vector[None, :])
                    entry_ids.append(entry.entry_id)
                    qualities.append(records[face_id].quality["verdict"])
                    face_ids.append(face_id)
    matrix = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, library.dim), np.float32)
    return matrix, entry_ids, qualities, face_ids


def hit_fields(calibration: CalibrationSet, template_quality: str, face_quality: dict, score: float) -> dict:
    """The calibrated fields of one face-vs-template score; the poorer face picks the table, so a poor or
    unusable face is capped at a 'weak' verdict and never raises a strong hit."""
    verdict = "poor" if not face_quality.get("usable", True) else face_quality["verdict"]
    covered = bool(face_quality.get("lower_face_covered"))
    return calibrated(pair_table(calibration, template_quality, verdict, covered), score)


def check_new_faces(store: WatchStore, library: Library, calibration: CalibrationSet, result: CommitResult,
                    person_faces: PersonFaces) -> list[int]:
    """Compare the faces one commit added with every active watchlist; record the hits; return their ids.

    A video track keeps several template faces: only its best-scoring one raises a hit, with its time.
    """
    active = [watchlist for watchlist in store.watchlists(active_only=True) if watchlist.entries]
    if not active or not result.added_ids:
        return []
    new_ids = np.asarray(result.added_ids, dtype=np.int64)
    new_vectors = np.asarray(result.added_vectors, dtype=np.float32)
    usable = np.isfinite(new_vectors).all(axis=1)  # a damaged vector is refused by the index too
    records = library.catalog.faces(new_ids[usable].tolist())
    found: list[dict] = []
    for watchlist in active:
        matrix, entry_ids, qualities, template_faces = _templates(library, watchlist, person_faces)
        if not len(matrix):
            continue
        scores = new_vectors[usable] @ matrix.T
        listed_faces = np.array([-1 if face is None else face for face in template_faces], dtype=np.int64)
        best_by_track: dict[int, dict] = {}
        for row, face_id in enumerate(new_ids[usable].tolist()):
            record = records.get(face_id)
            if record is None:
                continue
            row_scores = np.where(listed_faces == face_id, -np.inf, scores[row])  # a listed face is no hit on itself
            column = int(np.argmax(row_scores))
            if not np.isfinite(row_scores[column]):
                continue
            fields = hit_fields(calibration, qualities[column], record.quality, float(row_scores[column]))
            expected, inside = within_limits(fields["fmr"], len(matrix), watchlist.max_fmr)
            if not inside:
                continue
            track = record.track
            hit = {
                "watchlist_id": watchlist.id, "entry_id": entry_ids[column], "face_id": face_id,
                "score": fields["similarity"], "fmr": fields["fmr"], "fmr_is_bound": fields["fmr_is_bound"],
                "expected_false_matches": float(f"{expected:.3g}"), "verdict": fields["verdict"],
                "quality": record.quality["verdict"], "media_path": record.path, "media_sha256": record.sha256,
                "time_s": (record.frame_time_s if record.frame_time_s is not None else track.best_time_s)
                if track else None,
                "track_id": track.id if track else None,
            }
            hit["payload"] = _payload_builder(watchlist, hit, fields["fmr_text"])
            if track is None:
                found.append(hit)
            elif track.id not in best_by_track or hit["score"] > best_by_track[track.id]["score"]:
                best_by_track[track.id] = hit
        found.extend(best_by_track.values())
    webhooks = {w.id: w.webhook_url for w in active if w.webhook_url}
    return store.record_hits(found, webhooks)


def _payload_builder(watchlist: Watchlist, hit: dict, fmr_text: str) -> Callable[[int], str]:
    """The webhook body of a hit, built once its id is known; no image, only what identifies the evidence."""
    def body(hit_id: int) -> str:
        return json.dumps({
            "event": "watchlist.hit", "hit_id": hit_id,
            "watchlist": {"id": watchlist.id, "name": watchlist.name, "max_fmr": watchlist.max_fmr},
            "entry_id": hit["entry_id"], "face_id": hit["face_id"], "similarity": hit["score"], "fmr": hit["fmr"],
            "fmr_text": fmr_text, "expected_false_matches": hit["expected_false_matches"], "verdict": hit["verdict"],
            "quality": hit["quality"], "media": {"path": hit["media_path"], "sha256": hit["media_sha256"]},
            "time_s": hit["time_s"], "sent_from": "facefind",
        }, sort_keys=True)
    return body


class WebhookDeliverer:
    """Sends queued deliveries from one background thread; a failure waits longer before each retry."""

    def __init__(self, store: WatchStore) -> None:
        self.store = store
        self.retry_base_s, self.max_attempts, self.timeout_s = RETRY_BASE_S, MAX_ATTEMPTS, POST_TIMEOUT_S
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        """Deliver what is due now, in the background (starts the thread if it is not running)."""
        with self._lock:
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="facefind-webhooks", daemon=True)
                self._thread.start()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every pending delivery to be sent or given up; True if none is left."""
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(min(0.05, max(0.0, deadline - time.monotonic())))
        return self.store.next_due() is None

    def stop(self) -> None:
        """Stop the thread after the delivery in hand; what is pending stays queued for the next run."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 1)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self.deliver_due(client)
                    due = self.store.next_due()
                except Exception:  # the library went away (closed, deleted): deliveries stay queued
                    return
                with self._lock:
                    if due is None and not self._wake.is_set():
                        return
                if due is not None:
                    self._wake.wait(max(0.0, min((due - now()).total_seconds(), 60.0)))

    def deliver_due(self, client: httpx.Client) -> int:
        """One attempt at every due delivery; returns how many were delivered."""
        delivered = 0
        for delivery in self.store.due_deliveries(now()):
            if self._stop.is_set():
                break
            body = delivery["body"].encode()
            headers = {"Content-Type": "application/json", "X-Facefind-Event": "watchlist.hit",
                       "X-Facefind-Delivery": str(delivery["id"])}
            if delivery["webhook_secret"]:
                headers[SIGNATURE_HEADER] = signature(delivery["webhook_secret"], body)
            try:
                response = client.post(delivery["url"], content=body, headers=headers)
                error = None if response.is_success else f"HTTP {response.status_code}"
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {failure}"
            attempts = delivery["attempts"] + 1
            if error is None:
                status, delivered = "delivered", delivered + 1
            else:
                status = "failed" if attempts >= self.max_attempts else "pending"
            wait_s = min(self.retry_base_s * 2 ** (attempts - 1), RETRY_MAX_WAIT_S)
            self.store.delivery_attempted(delivery["id"], status, attempts, now() + timedelta(seconds=wait_s), error)
        return delivered
