"""Training the occlusion classifier: reproducible, one stack at a time, recording the maps it read."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefind.evaluation.occlusion_training import MAP_OUTPUTS, FaceCrops, train
from facefind.pipeline.models import STACKS
from facefind.pipeline.occlusion import OcclusionClassifier, draw_mask
from facefind.samples import gallery_samples


@pytest.fixture(scope="module")
def small_crops(pipeline) -> FaceCrops:
    """The sample gallery's faces playing every part: celeba_dev and LFW people (8 + 4 identities) and, wearing a
    drawn mask, masked_real crawl batches."""
    faces = [face for sample in gallery_samples()
             for face in pipeline.analyze(np.asarray(Image.open(sample).convert("RGB")), masked_templates=False)]
    crops = np.stack([face.aligned for face in faces])
    n = len(crops)
    source = np.array(["celeba" if i % 3 < 2 else "lfw" for i in range(n)] + ["masked_real"] * n)
    group = np.array([f"person{i % 12}" for i in range(n)] + [f"batch{i % 6}" for i in range(n)])
    masked = np.stack([draw_mask(crop, "cloth", seed=i) for i, crop in enumerate(crops)])
    return FaceCrops(np.concatenate([crops, masked]), source, group, np.array([f"photo{i}.jpg" for i in range(2 * n)]),
                     np.full(2 * n, 40.0, np.float32), np.ones(2 * n, bool), np.full(2 * n, "arcface"))


def test_training_is_reproducible_and_records_the_maps_it_read(small_crops, tmp_path):
    first, second = train(small_crops), train(small_crops)
    first.save(tmp_path / "first.npz")
    second.save(tmp_path / "second.npz")
    loaded = [OcclusionClassifier.load(tmp_path / name) for name in ("first.npz", "second.npz")]
    assert loaded[0].provenance["weights_sha256"] == loaded[1].provenance["weights_sha256"]
    assert loaded[0].map_outputs == MAP_OUTPUTS["arcface"]
    assert loaded[0].provenance["model_ids"] == [STACKS["arcface"].model_id]
    check = loaded[0].provenance["check"]["lower_face_covered"]["arcface"]
    assert check["masked_real"]["faces"] == check["celeba_dev_clean"]["faces"] + check["lfw_clean"]["faces"]


def test_one_stack_at_a_time(small_crops):
    """Each stack's head reads its own recogniser's maps: crops of two stacks cannot share one."""
    mixed = FaceCrops(*(getattr(small_crops, f) for f in ("crops", "source", "group", "file", "eye_distance", "usable")),
                      np.array(["arcface", "sface"] * (len(small_crops.crops) // 2) + ["arcface"] * (len(small_crops.crops) % 2)))
    with pytest.raises(ValueError, match="one stack at a time"):
        train(mixed)
