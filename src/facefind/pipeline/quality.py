"""Measure how much a face can support a claim: size, sharpness, pose, detector confidence.

These are measured signals, not a learnt score, so a user can see *why* a face
is judged poor. The verdict is deliberately conservative: a face that is small,
blurred or turned away is flagged rather than silently ranked.

Before any of that, a detection must be a face the recogniser can read at all
(:func:`usability_problems`): detector false positives (hands, patterns, drawings)
and faces with the eyes a few pixels apart are reported as "not a usable face",
judged poor, and so can never be matched with a strong or possible verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from facefind.pipeline.align import ARCFACE_TEMPLATE, similarity_transform
from facefind.pipeline.models import ARCFACE_MBF, SFACE_2021DEC
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
# Usability limits, measured on real faces (LFW, celeba_dev) against detector false positives,
# synthetic non-faces and downscaled faces (numbers in the README, "Unusable detections").
# Detection score is not used: real LFW faces scored down to 0.57 (SCRFD), drawn faces up to 0.94.
# Eye distance, per model stack: its detector's landmarks on faces shrunk to 10 px between the eyes (LFW,
# bench/masked.py --usability) measure up to 12.1 px (SCRFD) and 13.5 px (YuNet). Real faces this small are
# already poor ("small face"); refusing them as unusable costs no match that could have been claimed.
MIN_USABLE_EYE_DISTANCE_PX = {ARCFACE_MBF.model_id: 12.5, SFACE_2021DEC.model_id: 14.0}
# RMS distance (px of the 112 crop) of the aligned 5 points from the template: real faces reach 8.5 (LFW)
# and 10.6 (celeba_dev, eyes >= 15 px apart); landmarks guessed on faces a few px wide reach 14-18.
MAX_LANDMARK_FIT_ERROR = 12.0
# The recogniser's output norm before normalisation, low on crops it cannot read. A real mask lowers it on
# the whole face more than on the upper face (read with the gallery's synthetic mask drawn over the lower
# face), while face-like patterns (two dots and a bar on an oval) read fairly as a whole (ArcFace up to 14.8)
# and poorly as an upper face. So a detection is unreadable only when both are low. bench/masked.py
# --usability: every synthetic non-face falls below both limits (ArcFace: whole <= 14.8, upper <= 11.0;
# SFace: 6.6, 6.3); refused among real masked faces with eyes >= 15 px apart: ArcFace 4.6%, SFace 9.1%.
MIN_FEATURE_NORM = {ARCFACE_MBF.model_id: 15.0, SFACE_2021DEC.model_id: 7.0}
MIN_UPPER_FACE_NORM = {ARCFACE_MBF.model_id: 11.5, SFACE_2021DEC.model_id: 6.5}
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
    usable: bool = True  # False: not a face the recogniser can read (false detection, eyes a few px apart)
    feature_norm: float | None = None  # the recogniser's output norm before normalisation
    upper_face_norm: float | None = None  # the same, on the upper face (read only where the whole face reads low)

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
    feature_norm: float | None = None,
    model_id: str | None = None,
    upper_face_norm: float | None = None,
) -> Quality:
    """Measure usability, size, sharpness (variance of the Laplacian on the aligned crop), pose and coverings.

    An unusable detection is poor. Hidden eyes make a face poor: too little of it is left to support
    an identification. A covered lower face makes it fair (such faces are matched and calibrated in
    their own mode), or poor when the face is also small, blurred, turned or tilted: then too little
    of it shows. ``feature_norm``, ``upper_face_norm`` and ``model_id`` come from the recogniser (see
    MIN_FEATURE_NORM).
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
    small_blurred_or_turned = bool(fair)
    if detection_score < MIN_GOOD_DETECTION:
        fair.append(f"uncertain detection ({detection_score:.2f})")
    covered = {}
    if occlusion is not None:
        if occlusion.eyes_covered:
            poor.append(f"eyes covered ({occlusion.eyes_covered_score:.2f})")
        if occlusion.lower_face_covered:
            covering = f"lower face covered ({occlusion.lower_face_covered_score:.2f})"
            if small_blurred_or_turned:  # what is left of a covered face is itself degraded
                poor.append(f"{covering} on a face that is also small, blurred or turned: too little of it shows")
            else:
                fair.append(covering)
        covered = asdict(occlusion)
    problems = usability_problems(landmarks, eye_distance, feature_norm, model_id, upper_face_norm)
    if problems:
        poor.insert(0, "not a usable face: " + "; ".join(problems))
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
        usable=not problems,
        feature_norm=None if feature_norm is None else round(float(feature_norm), 2),
        upper_face_norm=None if upper_face_norm is None else round(float(upper_face_norm), 2),
        **covered,
    )


def usability_problems(
    landmarks: np.ndarray, eye_distance: float, feature_norm: float | None, model_id: str | None,
    upper_face_norm: float | None = None,
) -> list[str]:
    """Why a detection is not a face the recogniser can read (empty: it is usable).

    Without ``upper_face_norm`` a low whole-face norm alone refuses the face (the safe side).
    """
    problems = []
    # an unknown recogniser's detector: the stricter limit
    if eye_distance < MIN_USABLE_EYE_DISTANCE_PX.get(model_id or "", max(MIN_USABLE_EYE_DISTANCE_PX.values())):
        problems.append(f"eyes {eye_distance:.0f} px apart")
    fit_error = landmark_fit_error(landmarks)
    if fit_error > MAX_LANDMARK_FIT_ERROR:
        problems.append(f"implausible landmarks (fit error {fit_error:.1f})")
    if needs_upper_face_norm(feature_norm, model_id):
        min_upper = MIN_UPPER_FACE_NORM[model_id or ""]
        if upper_face_norm is None or upper_face_norm < min_upper:
            upper = "" if upper_face_norm is None else f", upper face {upper_face_norm:.1f} < {min_upper}"
            problems.append(f"the recogniser cannot read it (feature norm {feature_norm:.1f}"
                            f" < {MIN_FEATURE_NORM[model_id or '']}{upper})")
    return problems


def needs_upper_face_norm(feature_norm: float | None, model_id: str | None) -> bool:
    """Whether the whole face reads too poorly to be usable unless its upper face reads well (a masked face)."""
    min_norm = MIN_FEATURE_NORM.get(model_id or "")
    return feature_norm is not None and min_norm is not None and feature_norm < min_norm


def landmark_fit_error(landmarks: np.ndarray) -> float:
    """RMS distance, in pixels of the 112x112 crop, between the aligned 5 points and the template.

    A real face, even turned, maps its eyes, nose and mouth near the template; landmarks a detector
    puts on a non-face often cannot be brought there by any rotation, scale and shift.
    """
    matrix = similarity_transform(landmarks)
    mapped = landmarks.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(((mapped - ARCFACE_TEMPLATE) ** 2).sum(axis=1).mean()))


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
