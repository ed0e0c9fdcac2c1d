"""YuNet face detection (OpenCV Zoo, Apache-2.0): the detector of the permissively licensed stack.

OpenCV's ``FaceDetectorYN`` runs the network and decodes boxes and the 5
landmarks, so no decoding is hand-written here. As for SCRFD, the image is
scaled so its long side fits ``size`` (small images are enlarged to 320, which
YuNet needs to find faces that fill the frame), and a tightly cropped portrait
that yields nothing is retried on a padded copy.
"""

from __future__ import annotations

import cv2
import numpy as np

from facefind.pipeline.detect import Detection
from facefind.pipeline.models import YUNET_2023MAR, verified_path

MIN_SIDE = 320


class YunetDetector:
    """Finds faces in an RGB image with YuNet (2023mar, int8 block-quantised)."""

    model = YUNET_2023MAR

    def __init__(
        self,
        size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        min_face_px: float = 10.0,
        threads: int | None = None,
    ) -> None:
        self.size = size
        self.min_face_px = min_face_px
        if threads:
            cv2.setNumThreads(threads)  # OpenCV's pool is per process; workers ask for 1
        # OpenCV 5 warns on every load that FaceDetectorYN's target setting is ignored: noise for users.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        self._detector = cv2.FaceDetectorYN.create(
            str(verified_path(self.model)), "", (MIN_SIDE, MIN_SIDE), score_threshold, nms_threshold, 5000
        )

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in ``rgb``, best first; retries on a padded copy if none is found."""
        found = self._detect_once(rgb, pad_fraction=0.0)
        if not found:
            found = self._detect_once(rgb, pad_fraction=0.5)
        return found

    def _detect_once(self, rgb: np.ndarray, pad_fraction: float) -> list[Detection]:
        height, width = rgb.shape[:2]
        pad = int(round(max(height, width) * pad_fraction / 2))
        if pad:
            rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        long_side = max(rgb.shape[:2])
        scale = min(self.size / long_side, 1.0 if long_side >= MIN_SIDE else MIN_SIDE / long_side)
        new_w, new_h = max(1, int(round(rgb.shape[1] * scale))), max(1, int(round(rgb.shape[0] * scale)))
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._detector.setInputSize((new_w, new_h))
        _, rows = self._detector.detect(cv2.cvtColor(resized, cv2.COLOR_RGB2BGR))
        if rows is None:
            return []
        detections = []
        for row in sorted(rows, key=lambda r: -r[14]):
            box = np.array([row[0], row[1], row[0] + row[2], row[1] + row[3]], dtype=np.float64) / scale - pad
            box[[0, 2]] = box[[0, 2]].clip(0, width)
            box[[1, 3]] = box[[1, 3]].clip(0, height)
            if min(box[2] - box[0], box[3] - box[1]) < self.min_face_px:
                continue
            # YuNet's landmark order (right eye, left eye, nose, right and left mouth corner, as the person
            # sees them) is image-left first, the same order as SCRFD's.
            landmarks = row[4:14].reshape(5, 2).astype(np.float64) / scale - pad
            detections.append(Detection(box=box, landmarks=landmarks, score=float(row[14])))
        return detections
