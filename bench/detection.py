"""Detection recall at IoU 0.5 on the hand-labelled boxes in detection_boxes/ (training + testing).

Writes bench/results/detection.json.   python bench/detection.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_dir_or_exit, write_json  # noqa: E402

from facefind.evaluation.detection import detection_recall, read_imglab_xml  # noqa: E402
from facefind.pipeline.detect import ScrfdDetector  # noqa: E402


def main() -> None:
    folder = data_dir_or_exit() / "detection_boxes"
    images = read_imglab_xml(folder / "training.xml") + read_imglab_xml(folder / "testing.xml")
    result = detection_recall(ScrfdDetector(), images)
    path = write_json("detection", {**result, "target_recall": 0.95})
    print(f"recall@IoU0.5 = {result['recall']:.3f} ({result['matched']}/{result['faces']}),"
          f" {result['unmatched_detections']} unmatched detections; wrote {path}")


if __name__ == "__main__":
    main()
