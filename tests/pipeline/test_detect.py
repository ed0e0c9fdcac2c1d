import cv2
import numpy as np

from facefind.evaluation.detection import detection_recall, read_imglab_xml
from facefind.pipeline.decode import decode_image
from facefind.samples import sample_path


def test_finds_every_player_in_the_team_photo(stack_pipeline):
    pixels = decode_image(sample_path("players.jpg")).pixels
    faces = stack_pipeline.detector.detect(pixels)
    # 14 players and officials in the front rows face the camera; the crowd behind adds more.
    assert len(faces) >= 14
    assert all(0 <= f.box[0] < f.box[2] <= pixels.shape[1] for f in faces)


def test_tightly_cropped_portrait_is_found(stack_pipeline, sample_rgb):
    face = stack_pipeline.detector.detect(sample_rgb)[0]
    x1, y1, x2, y2 = face.box.astype(int)
    tight = np.ascontiguousarray(sample_rgb[y1 + 5 : y2 - 5, x1 + 5 : x2 - 5])
    assert len(stack_pipeline.detector.detect(tight)) == 1


def test_small_faces_down_to_about_20_px(stack_pipeline):
    pixels = decode_image(sample_path("players.jpg")).pixels
    small = cv2.resize(pixels, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)
    faces = stack_pipeline.detector.detect(small)
    sizes = sorted(min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in faces)
    assert len(faces) >= 12
    assert sizes[0] <= 22


def test_blank_image_has_no_face(stack_pipeline):
    assert stack_pipeline.detector.detect(np.full((300, 400, 3), 128, np.uint8)) == []


def test_landmarks_lie_inside_their_box(stack_pipeline, sample_rgb):
    for face in stack_pipeline.detector.detect(sample_rgb):
        assert (face.landmarks[:, 0] >= face.box[0] - 5).all() and (face.landmarks[:, 0] <= face.box[2] + 5).all()


def test_recall_on_hand_labelled_boxes(stack_pipeline, data_dir):
    folder = data_dir / "detection_boxes"
    images = read_imglab_xml(folder / "training.xml") + read_imglab_xml(folder / "testing.xml")
    result = detection_recall(stack_pipeline.detector, images)
    assert result["faces"] == 43
    assert result["recall"] >= 0.95, result
