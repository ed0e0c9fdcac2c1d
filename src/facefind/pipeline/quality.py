"""Measure how much a face can support a claim: size, sharpness, pose, detector confidence.

These are measured signals, not a learnt score, so a user can see *why* a face
is judged poor. The verdict is deliberately conservative: a face that is small,
blurred or turned away is flagged rather than silently ranked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from facefind.pipeline.occlusion import Occlusion

MIN_GOOD_EYE_DISTANCE_PX = 30.0
MIN_FAIR_EYE_DISTANCE_PX = 15.0
MIN_GOOD_SHARPNESS = 60.0
MIN_FAIR_SHARPNESS = 20.0
MAX_GOOD_YAW_DEG = 30.0
MAX_FAIR_YAW_DEG = 50.0
MAX_GOOD_PITCH_DEG = 25.0
MAX_FAIR_PITCH_DEG = 40.0
MIN_GOOD_DETECTION = 0.7
# The nose sits about this far from the eye line, as a fraction of the eye-to-mouth distance, on a frontal face.
_FRONTAL_NOSE_RATIO = 0.50


@dataclass(frozen=True)
class Quality:
    """Measured quality signals of one face, and the verdict they add up to."""

    face_px: float
    eye_distance_px: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    detection_score: float
    verdict: str  # "good", "fair" or "poor"
    reasons: list[str] = field(default_factory=list)
    lower_face_covered: bool | None = None  # None: no occlusion classifier for this recogniser
    lower_face_covered_score: float | None = None
    eyes_covered: bool | None = None
    eyes_covered_score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Quality":
        return cls(**data)


def assess_quality(
    box: np.ndarray,
    landmarks: np.ndarray,
    detection_score: float,
    aligned_rgb: np.ndarray,
    occlusion: Occlusion | None = None,
) -> Quality:
    """Measure size, sharpness (variance of the Laplacian on the aligned crop), pose and coverings.

    Hidden eyes make a face poor: too little of it is left to support an identification. A
    covered lower face makes it fair; such faces are matched and calibrated in their own mode.
    """
    face_px = float(min(box[2] - box[0], box[3] - box[1]))
    left_eye, right_eye, nose, left_mouth, right_mouth = landmarks.astype(np.float64)
    eye_vector = right_eye - left_eye
    eye_distance = float(np.linalg.norm(eye_vector))
    yaw, pitch, roll = _pose_from_landmarks(left_eye, right_eye, nose, (left_mouth + right_mouth) / 2)
    grey = cv2.cvtColor(aligned_rgb, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())

    poor, fair = [], []
    _grade(eye_distance, MIN_GOOD_EYE_DISTANCE_PX, MIN_FAIR_EYE_DISTANCE_PX, "small face", poor, fair, higher_is_better=True)
    _grade(sharpness, MIN_GOOD_SHARPNESS, MIN_FAIR_SHARPNESS, "blurred", poor, fair, higher_is_better=True)
    _grade(abs(yaw), MAX_GOOD_YAW_DEG, MAX_FAIR_YAW_DEG, "turned sideways", poor, fair, higher_is_better=False)
    _grade(abs(pitch), MAX_GOOD_PITCH_DEG, MAX_FAIR_PITCH_DEG, "tilted up/down", poor, fair, higher_is_better=False)
    if detection_score < MIN_GOOD_DETECTION:
        fair.append(f"uncertain detection ({detection_score:.2f})")
    covered = {}
    if occlusion is not None:
        if occlusion.eyes_covered:
            poor.append(f"eyes covered ({occlusion.eyes_covered_score:.2f})")
        if occlusion.lower_face_covered:
            fair.append(f"lower face covered ({occlusion.lower_face_covered_score:.2f})")
        covered = asdict(occlusion)
    verdict = "poor" if poor else "fair" if fair else "good"
    return Quality(
        face_px=round(face_px, 1),
        eye_distance_px=round(eye_distance, 1),
        sharpness=round(sharpness, 1),
        yaw_deg=round(yaw, 1),
        pitch_deg=round(pitch, 1),
        roll_deg=round(roll, 1),
        detection_score=round(float(detection_score), 4),
        verdict=verdict,
        reasons=poor + fair,
        **covered,
    )


def _grade(value, good, fair, label, poor_list, fair_list, higher_is_better: bool) -> None:
    passes_good = value >= good if higher_is_better else value <= good
    passes_fair = value >= fair if higher_is_better else value <= fair
    if not passes_fair:
        poor_list.append(f"{label} ({value:.0f})")
    elif not passes_good:
        fair_list.append(f"{label} ({value:.0f})")


def _pose_from_landmarks(left_eye, right_eye, nose, mouth) -> tuple[float, float, float]:
    """Rough yaw/pitch/roll in degrees from 5 points; enough to flag profiles and steep tilts."""
    eye_vector = right_eye - left_eye
    eye_distance = max(float(np.linalg.norm(eye_vector)), 1e-6)
    roll = math.degrees(math.atan2(eye_vector[1], eye_vector[0]))
    axis = eye_vector / eye_distance
    normal = np.array([-axis[1], axis[0]])
    eye_mid = (left_eye + right_eye) / 2
    # Yaw: the nose tip stands out about half an eye distance from the eye plane, so turning the
    # head by theta shifts it along the eye line by tan(theta) half-eye-distances.
    along = float(np.dot(nose - eye_mid, axis)) / (eye_distance / 2)
    yaw = math.degrees(math.atan(along))
    # Pitch: the nose's position between eye line and mouth moves as the head nods.
    nose_down = float(np.dot(nose - eye_mid, normal))
    mouth_down = max(float(np.dot(mouth - eye_mid, normal)), 1e-6)
    offset = (nose_down / mouth_down - _FRONTAL_NOSE_RATIO) / _FRONTAL_NOSE_RATIO
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, offset))))
    return yaw, pitch, roll


def quality_score(quality: Quality) -> float:
    """One number in [0, 1] for picking a track's best frames: confident, large, sharp, frontal."""
    size = min(1.0, quality.eye_distance_px / 40.0)
    sharpness = min(1.0, quality.sharpness / 100.0)
    pose = max(0.0, math.cos(math.radians(quality.yaw_deg))) * max(0.0, math.cos(math.radians(quality.pitch_deg)))
    return float(quality.detection_score * (0.25 + 0.75 * size) * (0.5 + 0.5 * sharpness) * pose)
