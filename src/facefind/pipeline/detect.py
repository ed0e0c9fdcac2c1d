"""SCRFD face detection (the 500M-FLOP variant with 5 keypoints).

The network is fully convolutional, so instead of always letterboxing into a
fixed 640x640 square we scale the image so its long side fits ``size`` and pad
only up to the next multiple of 32: a 150x150 photo costs a fraction of a VGA
frame. Tightly cropped portraits, where the face fills the frame, lack the
context SCRFD was trained with; they are detected on a padded copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facefind.pipeline.models import SCRFD_500M, open_session, verified_path

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
MIN_SIDE = 320  # small images are enlarged to this long side: both detectors miss faces that fill a tiny frame


@dataclass(frozen=True)
class Detection:
    """One face found by the detector, in source-image pixel coordinates."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2) left eye, right eye, nose, left mouth, right mouth (image left/right)
    score: float


def detect_with_padded_retry(detect_once, rgb: np.ndarray) -> list[Detection]:
    """``detect_once(rgb, pad_fraction)``, retried on a padded copy when a tight crop yields nothing."""
    found = detect_once(rgb, 0.0)
    if not found:
        found = detect_once(rgb, 0.5)
    return found


def pad_image(rgb: np.ndarray, pad_fraction: float) -> tuple[np.ndarray, int]:
    """The image with a black border of ``pad_fraction`` of its long side in all, and the border width."""
    pad = int(round(max(rgb.shape[:2]) * pad_fraction / 2))
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return rgb, pad


def fit_to_size(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Scale so the long side fits ``size`` (small images up to MIN_SIDE); the resized image and the scale."""
    long_side = max(rgb.shape[:2])
    scale = min(size / long_side, 1.0 if long_side >= MIN_SIDE else MIN_SIDE / long_side)
    new_w, new_h = max(1, int(round(rgb.shape[1] * scale))), max(1, int(round(rgb.shape[0] * scale)))
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return resized, scale


def clipped_box(box: np.ndarray, width: int, height: int, min_face_px: float) -> np.ndarray | None:
    """The box clipped to the image, or None when what is left is smaller than ``min_face_px``."""
    box = box.copy()
    box[[0, 2]] = box[[0, 2]].clip(0, width)
    box[[1, 3]] = box[[1, 3]].clip(0, height)
    return None if min(box[2] - box[0], box[3] - box[1]) < min_face_px else box


class ScrfdDetector:
    """Finds faces in an RGB image with SCRFD-500M."""

    model = SCRFD_500M

    def __init__(
        self,
        size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        min_face_px: float = 10.0,
        threads: int | None = None,
    ) -> None:
        self.size = size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_face_px = min_face_px
        self._session = open_session(verified_path(self.model), threads)
        self._input_name = self._session.get_inputs()[0].name
        self._anchor_cache: dict[tuple[int, int, int], np.ndarray] = {}

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in ``rgb``, best first; retries on a padded copy if none is found."""
        return detect_with_padded_retry(self._detect_once, rgb)

    def _detect_once(self, rgb: np.ndarray, pad_fraction: float) -> list[Detection]:
        height, width = rgb.shape[:2]
        rgb, pad = pad_image(rgb, pad_fraction)
        blob, scale = self._letterbox(rgb)
        outputs = self._session.run(None, {self._input_name: blob})
        boxes, landmarks, scores = self._decode(outputs, blob.shape[2], blob.shape[3])
        if len(scores) == 0:
            return []
        boxes = boxes / scale - pad
        landmarks = landmarks / scale - pad
        keep = self._nms(boxes, scores)
        detections = []
        for i in keep:
            box = clipped_box(boxes[i], width, height, self.min_face_px)
            if box is not None:
                detections.append(Detection(box=box, landmarks=landmarks[i], score=float(scores[i])))
        return detections

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """Scale so the long side fits ``size``, pad bottom/right to multiples of 32, normalise."""
        resized, scale = fit_to_size(rgb, self.size)
        new_h, new_w = resized.shape[:2]
        pad_w, pad_h = -(-new_w // 32) * 32, -(-new_h // 32) * 32
        canvas = np.zeros((pad_h, pad_w, 3), dtype=np.float32)
        canvas[:new_h, :new_w] = (resized.astype(np.float32) - 127.5) / 128.0
        return canvas.transpose(2, 0, 1)[None], scale

    def _anchor_centers(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._anchor_cache:
            ys, xs = np.mgrid[: height // stride, : width // stride]
            centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            self._anchor_cache[key] = np.repeat(centers, ANCHORS_PER_CELL, axis=0)
        return self._anchor_cache[key]

    def _decode(self, outputs: list[np.ndarray], height: int, width: int):
        all_boxes, all_kps, all_scores = [], [], []
        for level, stride in enumerate(STRIDES):
            scores = outputs[level][0, :, 0]
            keep = np.nonzero(scores >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            centers = self._anchor_centers(height, width, stride)[keep]
            distances = outputs[level + 3][0, keep] * stride
            kps = outputs[level + 6][0, keep].reshape(-1, 5, 2) * stride
            all_boxes.append(np.hstack([centers - distances[:, :2], centers + distances[:, 2:]]))
            all_kps.append(kps + centers[:, None, :])
            all_scores.append(scores[keep])
        if not all_scores:
            return np.empty((0, 4)), np.empty((0, 5, 2)), np.empty(0)
        return np.vstack(all_boxes), np.vstack(all_kps), np.concatenate(all_scores)

    def _nms(self, boxes: np.ndarray, scores: np.ndarray) -> list[int]:
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
        keep = cv2.dnn.NMSBoxes(xywh, scores.tolist(), self.score_threshold, self.nms_threshold)
        return sorted(np.asarray(keep).reshape(-1).tolist(), key=lambda i: -scores[i])
