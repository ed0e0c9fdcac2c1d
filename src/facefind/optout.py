"""The opt-out block list at ingest: faces of people who asked to be erased and kept out are never stored.

Each opted-out person is one template (an embedding, no image) with the similarity at or above
which a face counts as theirs (the erasure's strict FMR, turned into a score when they opted out).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from facefind.catalog import Catalog, MediaOutcome

OPTED_OUT = "opted_out"


@dataclasses.dataclass(frozen=True)
class BlockList:
    templates: np.ndarray  # (n, dim) unit vectors
    thresholds: np.ndarray  # (n,) similarity at or above which a face is that person's

    @classmethod
    def load(cls, catalog: Catalog, model_id: str) -> "BlockList":
        templates, thresholds = catalog.blocked_templates(model_id)
        return cls(templates, thresholds)

    def blocks(self, embedding: np.ndarray) -> bool:
        if not len(self.thresholds):
            return False
        return bool(np.any(self.templates @ np.asarray(embedding, np.float32) >= self.thresholds))

    def screen(self, outcome: MediaOutcome, thumbnails: dict[str, bytes]) -> tuple[MediaOutcome, dict[str, bytes], int]:
        """The outcome without opted-out faces (a video: without their whole tracks), the crops it still
        needs, and how many faces were left out. A file left with no face is ``no_face``, reason ``opted_out``."""
        if not len(self.thresholds) or not outcome.faces:
            return outcome, thumbnails, 0
        blocked = [self.blocks(face.embedding) for face in outcome.faces]
        if not any(blocked):
            return outcome, thumbnails, 0
        blocked_tracks = {face.track_index for face, hit in zip(outcome.faces, blocked)
                          if hit and face.track_index is not None}
        faces = [face for face, hit in zip(outcome.faces, blocked)
                 if not hit and (face.track_index is None or face.track_index not in blocked_tracks)]
        tracks = [track for track in outcome.tracks if track.track_index not in blocked_tracks]
        needed = {face.thumbnail for face in faces} | {track.frame_thumbnail for track in tracks}
        kept = {name: data for name, data in thumbnails.items() if name in needed}
        left_out = len(outcome.faces) - len(faces)
        message = f"{left_out} face(s) of people who opted out were not stored"
        if faces:
            screened = dataclasses.replace(outcome, faces=faces, tracks=tracks, message=message)
        else:
            screened = dataclasses.replace(outcome, faces=[], tracks=[], status="no_face", reason=OPTED_OUT,
                                           message=message)
        return screened, kept, left_out
