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

from facefind.pipeline.detect import (
    MIN_SIDE,
    Detection,
    clipped_box,
    detect_with_padded_retry,
    fit_to_size,
    pad_image,
)
from facefind.pipeline.models import YUNET_2023MAR, verified_path


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
        return detect_with_padded_retry(self._detect_once, rgb)

    def _detect_once(self, rgb: np.ndarray, pad_fraction: float) -> list[Detection]:
        height, width = rgb.shape[:2]
        rgb, pad = pad_image(rgb, pad_fraction)
        resized, scale = fit_to_size(rgb, self.size)
        self._detector.setInputSize((resized.shape[1], resized.shape[0]))
        _, rows = self._detector.detect(cv2.cvtColor(resized, cv2.COLOR_RGB2BGR))
        if rows is None:
            return []
        detections = []
        for row in sorted(rows, key=lambda r: -r[14]):
            box = clipped_box(np.array([row[0], row[1], row[0] + row[2], row[1] + row[3]], dtype=np.float64) / scale
                              - pad, width, height, self.min_face_px)
            if box is None:
                continue
            # YuNet's landmark order (right eye, left eye, nose, right and left mouth corner, as the person
            # sees them) is image-left first, the same order as SCRFD's.
            landmarks = row[4:14].reshape(5, 2).astype(np.float64) / scale - pad
            detections.append(Detection(box=box, landmarks=landmarks, score=float(row[14])))
        return detections
