"""The whole pipeline in one call: pixels in, faces with quality and embeddings out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from facefind.pipeline.align import align_face
from facefind.pipeline.detect import Detection, ScrfdDetector
from facefind.pipeline.embed import OnnxArcFace, OnnxRecognizer, Recognizer, l2_normalise
from facefind.pipeline.models import DEFAULT_STACK, ModelStack, stack_named
from facefind.pipeline.occlusion import (
    GALLERY_SHAPE,
    Occlusion,
    draw_mask,
    lower_face_map_features,
    occlusion_classifier_for,
)
from facefind.pipeline.quality import Quality, assess_quality, needs_upper_face_norm
from facefind.pipeline.sface import OnnxSFace
from facefind.pipeline.yunet import YunetDetector


@dataclass(frozen=True)
class PipelineConfig:
    """Knobs a user may want to turn; defaults suit ordinary photo collections."""

    detection_size: int = 640
    detection_threshold: float = 0.5
    min_face_px: float = 10.0
    threads: int | None = None
    masked_templates: bool = True  # also embed each face wearing a synthetic mask, for covered probes
    model: str = DEFAULT_STACK  # the detector + recogniser stack (models.STACKS): "arcface" or "sface"


@dataclass(frozen=True)
class DetectedFace:
    """Everything facefind keeps about one face in one image."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 in source pixels
    landmarks: np.ndarray  # (5, 2) in source pixels
    detection_score: float
    quality: Quality
    embedding: np.ndarray  # (dim,) float32, unit length
    aligned: np.ndarray  # (112, 112, 3) uint8 RGB
    masked_embedding: np.ndarray | None = None  # the same face wearing the gallery mask

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def shipped_recognizer(stack: ModelStack, threads: int | None = None, map_outputs: tuple[str, ...] = (),
                       batch_size: int = 32) -> OnnxRecognizer:
    """The stack's own recogniser, also giving the intermediate maps ``map_outputs``."""
    recognizer_class = OnnxSFace if stack.name == "sface" else OnnxArcFace
    return recognizer_class(stack.recognizer, threads=threads, batch_size=batch_size, map_outputs=map_outputs)


class FacePipeline:
    """decode -> detect -> align -> assess quality -> embed, with models loaded once."""

    def __init__(self, config: PipelineConfig | None = None, recognizer: Recognizer | None = None) -> None:
        self.config = config or PipelineConfig()
        self.stack = stack_named(self.config.model)
        detector_class = YunetDetector if self.stack.name == "sface" else ScrfdDetector
        self.detector = detector_class(
            size=self.config.detection_size,
            score_threshold=self.config.detection_threshold,
            min_face_px=self.config.min_face_px,
            threads=self.config.threads,
        )
        # Occlusion weights checked on this stack's own crops (its detector's landmarks place them) and read from
        # its recogniser's maps; their flags send covered probes to the recogniser's 'covered' calibration table.
        # A plugged-in recogniser gets flags only if it gives the maps the weights were trained on.
        occlusion = occlusion_classifier_for(recognizer.model_id if recognizer else self.stack.model_id)
        if recognizer is None:
            recognizer = shipped_recognizer(self.stack, self.config.threads, occlusion.map_outputs if occlusion else ())
        self.recognizer = recognizer
        offered = getattr(recognizer, "map_outputs", ())
        self.occlusion = occlusion if occlusion and offered == occlusion.map_outputs else None

    @property
    def model_id(self) -> str:
        return self.recognizer.model_id

    def analyze(self, rgb: np.ndarray, masked_templates: bool | None = None) -> list[DetectedFace]:
        """Every face in an RGB image, largest first.

        ``masked_templates`` overrides the config: video frames skip them, because only a
        track's few chosen faces need one (see :meth:`masked_embeddings`).
        """
        detections = self.detector.detect(rgb)
        if not detections:
            return []
        crops = np.stack([align_face(rgb, d.landmarks) for d in detections])
        return sorted(self.describe(detections, crops, masked_templates), key=lambda face: -face.area)

    def describe(
        self, detections: list[Detection], crops: np.ndarray, masked_templates: bool | None = None,
        upper_face_norms: bool = True,
    ) -> list[DetectedFace]:
        """Embed and assess faces already detected and aligned, in the order given.

        Video calls this apart from detection: detection runs ahead in the decode thread, and
        faces that plainly continue a track are never embedded (see pipeline/track.py). Video also
        passes ``upper_face_norms=False``: of the many faces it tracks only a few are kept, and
        :meth:`complete` reads those few's upper faces (until then a low-reading face counts unusable).
        """
        if not detections:
            return []
        use_masked = self.config.masked_templates if masked_templates is None else masked_templates
        if use_masked:  # one batch: the faces, then the same faces masked
            both, lower_face_maps = self._features_and_lower_face(np.concatenate([crops, self._masked(crops)]))
            features, masked_features = both[: len(crops)], both[len(crops) :]
            masked = list(l2_normalise(masked_features))
        else:
            features, lower_face_maps = self._features_and_lower_face(crops)
            masked_features, masked = None, [None] * len(crops)
        embeddings = l2_normalise(features)
        # A plugged-in recogniser without raw_features gives unit vectors: their norm says nothing.
        norms = np.linalg.norm(features, axis=1) if hasattr(self.recognizer, "raw_features") else [None] * len(crops)
        upper_norms = self._upper_face_norms(crops, norms, masked_features) if upper_face_norms else [None] * len(crops)
        occlusions = (self.occlusion.predict(crops, lower_face_maps[: len(crops)]) if self.occlusion
                      else [None] * len(crops))
        faces = [
            DetectedFace(
                box=d.box.astype(np.float32),
                landmarks=d.landmarks.astype(np.float32),
                detection_score=d.score,
                quality=assess_quality(d.box, d.landmarks, d.score, crop, occlusion, norm, self.model_id, upper),
                embedding=embedding,
                aligned=crop,
                masked_embedding=masked_embedding,
            )
            for d, crop, embedding, masked_embedding, occlusion, norm, upper
            in zip(detections, crops, embeddings, masked, occlusions, norms, upper_norms)
        ]
        return faces

    def _upper_face_norms(self, crops: np.ndarray, norms, masked_features: np.ndarray | None) -> list[float | None]:
        """The feature norm of each face wearing the gallery mask, which a real mask does not lower.

        Only faces whose whole reads low need it (quality.needs_upper_face_norm); without masked
        templates only those few are read again.
        """
        wanted = [i for i, norm in enumerate(norms) if needs_upper_face_norm(norm, self.model_id)]
        upper: list[float | None] = [None] * len(crops)
        if wanted:
            features = (masked_features[wanted] if masked_features is not None
                        else self._features(self._masked(crops[wanted])))
            for i, value in zip(wanted, np.linalg.norm(features, axis=1)):
                upper[i] = float(value)
        return upper

    def complete(self, faces: list[DetectedFace], masked_templates: bool | None = None) -> list[DetectedFace]:
        """What ``describe(masked_templates=False, upper_face_norms=False)`` left out, for the faces kept:
        their masked templates (when the config keeps them) and, for faces whose whole reads low, the
        upper-face norm their quality needs; one masked embedding per face serves both.
        """
        use_masked = self.config.masked_templates if masked_templates is None else masked_templates
        low = {i for i, face in enumerate(faces) if needs_upper_face_norm(face.quality.feature_norm, self.model_id)}
        wanted = list(range(len(faces))) if use_masked else sorted(low)
        if not wanted:
            return list(faces)
        raw = dict(zip(wanted, self._features(self._masked(np.stack([faces[i].aligned for i in wanted])))))
        completed = []
        for i, face in enumerate(faces):
            if i in low:
                q = face.quality
                occlusion = None if q.eyes_covered is None else Occlusion(
                    q.lower_face_covered, q.lower_face_covered_score, q.eyes_covered, q.eyes_covered_score)
                face = replace(face, quality=assess_quality(
                    face.box, face.landmarks, face.detection_score, face.aligned, occlusion, q.feature_norm,
                    self.model_id, float(np.linalg.norm(raw[i]))))
            if use_masked:
                face = replace(face, masked_embedding=l2_normalise(raw[i][None])[0])
            completed.append(face)
        return completed

    @cached_property
    def single_threaded(self) -> "FacePipeline":
        """This pipeline with each model session on one thread, for callers that run stages in threads of
        their own (video: detection ahead, embedding behind); one-thread sessions cost ~10% less CPU than
        several threads contending for two cores. Photo ingest and the service keep their sessions.
        """
        if self.config.threads == 1:
            return self
        shipped = type(self.recognizer) in (OnnxArcFace, OnnxSFace)  # a plugged-in recogniser is kept as is
        return FacePipeline(replace(self.config, threads=1), None if shipped else self.recognizer)

    def _features(self, crops: np.ndarray) -> np.ndarray:
        """The recogniser's output before normalisation, where it offers it."""
        if hasattr(self.recognizer, "raw_features"):
            return self.recognizer.raw_features(crops)
        return self.recognizer.embed(crops)

    def _features_and_lower_face(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw features and, where the occlusion classifier reads them, the lower-face maps, in one pass."""
        if self.occlusion is None:
            return self._features(crops), None
        return self.recognizer.features_and_maps(crops, lower_face_map_features)

    def occlusions(self, crops: np.ndarray) -> list[Occlusion | None]:
        """Covered-face flags of aligned crops (None without a classifier for this recogniser)."""
        if self.occlusion is None:
            return [None] * len(crops)
        return self.occlusion.predict(crops, self._features_and_lower_face(crops)[1])

    @staticmethod
    def _masked(crops: np.ndarray) -> np.ndarray:
        return np.stack([draw_mask(crop, GALLERY_SHAPE, seed=0) for crop in crops])

    def masked_embeddings(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of aligned crops wearing the gallery mask: the templates covered probes meet."""
        return self.recognizer.embed(self._masked(crops))
