"""Detection recall against hand-drawn boxes (dlib imglab XML)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefind.pipeline.decode import decode_image
from facefind.pipeline.detect import ScrfdDetector


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2


def read_imglab_xml(xml_path: Path) -> list[LabelledImage]:
    """Images and their non-ignored face boxes from a dlib imglab file."""
    images = []
    for element in ET.parse(xml_path).getroot().iter("image"):
        boxes = [
            [float(b.get("left")), float(b.get("top")),
             float(b.get("left")) + float(b.get("width")), float(b.get("top")) + float(b.get("height"))]
            for b in element.iter("box")
            if b.get("ignore") != "1"
        ]
        images.append(LabelledImage(xml_path.parent / element.get("file"), np.array(boxes).reshape(-1, 4)))
    return images


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (n, 4) and ``b`` (m, 4)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def match_recall(truth: np.ndarray, found: np.ndarray, threshold: float = 0.5) -> int:
    """How many ground-truth boxes are matched one-to-one (greedy by IoU) at ``threshold``."""
    if len(truth) == 0 or len(found) == 0:
        return 0
    overlaps = iou(truth, found)
    matched = 0
    while overlaps.size and overlaps.max() >= threshold:
        t, f = np.unravel_index(overlaps.argmax(), overlaps.shape)
        matched += 1
        overlaps[t, :] = -1
        overlaps[:, f] = -1
    return matched


def detection_recall(detector: ScrfdDetector, images: list[LabelledImage], threshold: float = 0.5) -> dict:
    """Recall at IoU ``threshold`` and the number of extra detections, over all images."""
    total = matched = detections = 0
    per_image = []
    for image in images:
        found = detector.detect(decode_image(image.path).pixels)
        boxes = np.array([d.box for d in found]).reshape(-1, 4)
        hit = match_recall(image.boxes, boxes, threshold)
        total += len(image.boxes)
        matched += hit
        detections += len(boxes)
        per_image.append({"file": image.path.name, "faces": len(image.boxes), "found": hit, "detections": len(boxes)})
    return {
        "iou_threshold": threshold,
        "faces": total,
        "matched": matched,
        "recall": matched / total if total else 0.0,
        "detections": detections,
        "unmatched_detections": detections - matched,
        "images": per_image,
    }
