"""Track faces across sampled video frames, then join a person's tracks across cuts and occlusions.

Online step: each frame's faces are assigned greedily to live tracks by box
overlap plus embedding similarity; a track ends after ``max_gap_s`` unseen.
A face that plainly continues a live track (alone on its last box, looking like its last
crop) is not embedded while tracking: embedding is most of the cost of video, and a track is
re-embedded at least every ``RECHECK_S`` so cuts and swaps are still caught. Such a face still
competes, by quality, to be one of its track's templates; only the faces finally chosen are
embedded (in batches, by :meth:`FaceTracker.finish`).
Offline step: finished tracks whose mean embeddings are very similar, and that
never appear in the same frame, are joined, so a person who leaves the shot
and returns is one appearance with several time ranges instead of many
fragments. Each track keeps only its few best faces (by quality) as templates.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from facefind.pipeline.core import DetectedFace
from facefind.pipeline.decode import encode_jpeg
from facefind.pipeline.detect import Detection
from facefind.pipeline.quality import assess_quality, quality_score

MIN_LINK_SIMILARITY = 0.15  # below this two faces are not the same person, whatever the overlap
LINK_SIMILARITY = 0.40  # enough on its own to continue a track after a jump
LINK_IOU = 0.25
JOIN_SIMILARITY = 0.45  # joining finished tracks: calibrated FMR is far below 1e-6 here
CANDIDATES_PER_TRACK = 6
TEMPLATES_PER_TRACK = 3
# A face continues a track without an embedding when its box overlaps the track's last box this much,
# nothing else is near, and its crop correlates with the track's last crop this well (16x16 grey).
# Faces 0.2 s apart with IoU >= 0.3 in the three videos of ../shared/data (first 12 s each): the same
# person correlates at 0.43-0.98 (5th percentile 0.56), another person at most 0.51; above these two
# thresholds 151 of 177 same-person pairs pass and no other-person pair does. A face sighted this way
# that is chosen as a template yet does not look like its track when embedded is dropped (finish()).
STEADY_IOU = 0.3
STEADY_LOOK = 0.6
RECHECK_S = 1.0  # every live track is embedded again at least this often (every 5th sample at 5 fps)
FRAME_THUMBNAIL_SIDE = 640
_sequence = itertools.count()
# Embeds and assesses detected, aligned faces in the order given (FacePipeline.describe, no masks).
Describe = Callable[[list[Detection], np.ndarray], list[DetectedFace]]


@dataclass(frozen=True)
class Sighting:
    """A face that continues its track without an embedding: enough to rank it and to embed it if chosen."""

    detection: Detection
    crop: np.ndarray  # aligned (112, 112, 3) RGB

    @property
    def score(self) -> float:
        """:func:`quality_score` needs neither coverings nor the feature norm: no model runs for it."""
        d = self.detection
        return quality_score(assess_quality(d.box, d.landmarks, d.score, self.crop))


@dataclass(order=True)
class Candidate:
    """A face that may become one of its track's templates; ``face`` is None until it is embedded."""

    score: float
    order: int
    time_s: float = field(compare=False)
    face: DetectedFace | None = field(compare=False)
    frame_jpeg: bytes = field(compare=False)
    frame_scale: float = field(compare=False)
    sighting: Sighting | None = field(default=None, compare=False)  # what embeds it, while face is None


@dataclass
class Track:
    """One person's run of faces in a video."""

    segments: list[list[float]]  # [start_s, end_s] time ranges
    last_box: np.ndarray
    embedding_sum: np.ndarray
    observations: int = 0
    embedded_s: float = float("-inf")  # when the track last got an embedded face
    last_look: np.ndarray | None = None  # crop_signature of its latest face
    candidates: list[Candidate] = field(default_factory=list)  # min-heap on score, bounded

    @property
    def mean_embedding(self) -> np.ndarray:
        return self.embedding_sum / max(np.linalg.norm(self.embedding_sum), 1e-12)

    @property
    def start_s(self) -> float:
        return self.segments[0][0]

    @property
    def end_s(self) -> float:
        return self.segments[-1][1]

    def templates(self, count: int = TEMPLATES_PER_TRACK, min_spacing_s: float = 0.4) -> list[Candidate]:
        """The best faces, spread in time where possible."""
        ranked = sorted(self.candidates, reverse=True)
        chosen: list[Candidate] = []
        for candidate in ranked:
            if all(abs(candidate.time_s - c.time_s) >= min_spacing_s for c in chosen):
                chosen.append(candidate)
            if len(chosen) == count:
                return chosen
        for candidate in ranked:  # not enough spread: fill with the next best
            if candidate not in chosen and len(chosen) < count:
                chosen.append(candidate)
        return chosen


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def crop_signature(aligned: np.ndarray) -> np.ndarray:
    """A tiny appearance vector of an aligned face crop (zero-mean, unit-length 16x16 grey): enough to
    tell the same face a fifth of a second later from another face, at a thousandth of an embedding's cost."""
    grey = cv2.resize(cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
    vector = grey.astype(np.float32).ravel()
    vector -= vector.mean()
    return vector / max(float(np.linalg.norm(vector)), 1e-6)


def _frame_jpeg(pixels: np.ndarray) -> tuple[bytes, float]:
    scale = min(1.0, FRAME_THUMBNAIL_SIDE / max(pixels.shape[:2]))
    small = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else pixels
    return encode_jpeg(small, quality=85), scale


class FaceTracker:
    """Feed it each sampled frame's faces in time order; ``finish()`` returns the joined tracks.

    A face unseen for more than ``max_gap_s`` ends its live track (the joining step may
    still reunite it); unseen for more than ``segment_gap_s`` (about two samples) it is
    off screen, and its track's time ranges say so.
    """

    def __init__(self, sample_interval_s: float = 0.2) -> None:
        self.sample_interval_s = sample_interval_s
        self.segment_gap_s = 2.5 * sample_interval_s
        self.max_gap_s = max(1.5, 4 * sample_interval_s)
        self.live: list[Track] = []
        self.done: list[Track] = []

    def _retire(self, time_s: float) -> None:
        still_live = []
        for track in self.live:
            (self.done if time_s - track.end_s > self.max_gap_s else still_live).append(track)
        self.live = still_live

    def steady(self, time_s: float, boxes: list[np.ndarray], crops: np.ndarray) -> dict[int, int]:
        """Which of a frame's detections plainly continue a live track: {detection: live track index}.

        Those need no embedding; pass them to :meth:`update` as ``continued``. Plainly means: the
        track was seen in the previous sample and embedded within ``RECHECK_S``; the face is the only
        one near its last box and near no other track; and its crop looks like the track's last one.
        """
        self._retire(time_s)
        if not self.live or not boxes:
            return {}
        overlaps = np.array([[_iou(track.last_box, box) for box in boxes] for track in self.live])
        steady = {}
        for t, track in enumerate(self.live):
            if time_s - track.end_s > 1.5 * self.sample_interval_s or time_s - track.embedded_s > RECHECK_S:
                continue
            near = np.flatnonzero(overlaps[t] >= LINK_IOU)
            if len(near) != 1 or overlaps[t, near[0]] < STEADY_IOU or (overlaps[:, near[0]] >= LINK_IOU).sum() != 1:
                continue
            if track.last_look is not None and float(crop_signature(crops[near[0]]) @ track.last_look) >= STEADY_LOOK:
                steady[int(near[0])] = t
        return steady

    def update(
        self,
        time_s: float,
        faces: list[DetectedFace],
        pixels: np.ndarray,
        continued: dict[int, Sighting] | None = None,
    ) -> None:
        """Add a frame: embedded ``faces``, and ``continued`` {live track index: sighting} for the
        faces :meth:`steady` found continuing a track without an embedding."""
        self._retire(time_s)
        continued = continued or {}
        frame: tuple[bytes, float] | None = None
        for t, sighting in continued.items():
            track = self.live[t]
            self._extend(track, time_s, sighting.detection.box.astype(np.float32))
            track.last_look = crop_signature(sighting.crop)
            frame = self._consider(track, time_s, sighting.score, None, sighting, pixels, frame)
        pairs = []
        for t, track in enumerate(self.live):
            if t in continued:
                continue
            for d, face in enumerate(faces):
                similarity = float(track.mean_embedding @ face.embedding)
                overlap = _iou(track.last_box, face.box)
                if similarity >= MIN_LINK_SIMILARITY and (overlap >= LINK_IOU or similarity >= LINK_SIMILARITY):
                    pairs.append((overlap + similarity, t, d))
        used_tracks, used_faces = set(), set()
        for _, t, d in sorted(pairs, reverse=True):
            if t in used_tracks or d in used_faces:
                continue
            used_tracks.add(t)
            used_faces.add(d)
            frame = self._observe(self.live[t], time_s, faces[d], pixels, frame)
        for d, face in enumerate(faces):
            if d not in used_faces:
                track = Track(segments=[[time_s, time_s]], last_box=face.box, embedding_sum=np.zeros_like(face.embedding))
                frame = self._observe(track, time_s, face, pixels, frame)
                self.live.append(track)

    def _extend(self, track: Track, time_s: float, box: np.ndarray) -> None:
        if time_s - track.end_s > self.segment_gap_s:
            track.segments.append([time_s, time_s])
        track.segments[-1][1] = time_s
        track.last_box = box
        track.observations += 1

    def _observe(self, track: Track, time_s: float, face: DetectedFace, pixels: np.ndarray, frame):
        self._extend(track, time_s, face.box)
        track.embedded_s = time_s
        track.last_look = crop_signature(face.aligned)
        _add_embedding(track, face)
        return self._consider(track, time_s, quality_score(face.quality), face, None, pixels, frame)

    @staticmethod
    def _consider(track: Track, time_s: float, score: float, face: DetectedFace | None, sighting: Sighting | None,
                  pixels: np.ndarray, frame):
        """Keep the face among the track's candidate templates if it is one of its best so far."""
        if len(track.candidates) < CANDIDATES_PER_TRACK or score > track.candidates[0].score:
            frame = frame or _frame_jpeg(pixels)  # encoded once per frame, only when needed
            candidate = Candidate(score, next(_sequence), time_s, face, frame[0], frame[1], sighting)
            if len(track.candidates) < CANDIDATES_PER_TRACK:
                heapq.heappush(track.candidates, candidate)
            else:
                heapq.heapreplace(track.candidates, candidate)
        return frame

    def finish(self, describe: Describe) -> list[Track]:
        """Close every track and join tracks of the same person that never share a frame.

        ``describe`` embeds the chosen templates that were only sighted: first each track's own
        (their embeddings join the track's mean before tracks are compared), then, after joining,
        any a joined track chose that neither half had. Every returned template has its ``face``.
        """
        tracks = self.done + self.live
        self.live, self.done = [], []
        _embed_templates(tracks, describe)
        joined = True
        while joined:
            joined = False
            best = None
            for i, j in itertools.combinations(range(len(tracks)), 2):
                if _overlap_in_time(tracks[i], tracks[j]):
                    continue
                similarity = float(tracks[i].mean_embedding @ tracks[j].mean_embedding)
                if similarity >= JOIN_SIMILARITY and (best is None or similarity > best[0]):
                    best = (similarity, i, j)
            if best is not None:
                _, i, j = best
                tracks[i] = _join(tracks[i], tracks[j])
                del tracks[j]
                joined = True
        _embed_templates(tracks, describe)
        return sorted(tracks, key=lambda t: t.start_s)


def _add_embedding(track: Track, face: DetectedFace) -> None:
    """Fold an embedded face into the track's mean, weighted by its quality."""
    track.embedding_sum = track.embedding_sum + face.embedding * max(quality_score(face.quality), 0.05)


def _embed_templates(tracks: list[Track], describe: Describe) -> None:
    """Embed, a batch at a time, the templates the tracks would choose that are still only sightings.

    One that turns out unlike its track (below MIN_LINK_SIMILARITY: someone else took the place
    between two rechecks) is no longer a candidate, and the track chooses again.
    """
    while waiting := [(track, c) for track in tracks for c in track.templates() if c.face is None]:
        faces = describe([c.sighting.detection for _, c in waiting], np.stack([c.sighting.crop for _, c in waiting]))
        for (track, candidate), face in zip(waiting, faces):
            if float(track.mean_embedding @ face.embedding) < MIN_LINK_SIMILARITY:
                track.candidates.remove(candidate)
                heapq.heapify(track.candidates)
                continue
            candidate.face, candidate.sighting = face, None
            _add_embedding(track, face)


def _overlap_in_time(a: Track, b: Track) -> bool:
    return any(s1 <= e2 and s2 <= e1 for s1, e1 in a.segments for s2, e2 in b.segments)


def _join(a: Track, b: Track) -> Track:
    candidates = heapq.nlargest(CANDIDATES_PER_TRACK, a.candidates + b.candidates)
    heapq.heapify(candidates)
    return Track(
        segments=sorted(a.segments + b.segments),
        last_box=b.last_box if b.end_s > a.end_s else a.last_box,
        embedding_sum=a.embedding_sum + b.embedding_sum,
        observations=a.observations + b.observations,
        candidates=candidates,
    )
