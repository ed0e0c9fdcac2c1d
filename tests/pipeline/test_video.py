import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from facefind.errors import UnreadableMediaError
from facefind.pipeline.detect import Detection
from facefind.pipeline.track import RECHECK_S, TEMPLATES_PER_TRACK, FaceTracker, Sighting
from facefind.pipeline.video import Coverage, in_halves, read_frame_at, run_ahead, sample_frames, video_info
from tests.conftest import face_scene, set_display_rotation, write_video


def test_sampling_follows_timestamps(clip_with_a_cut):
    info = video_info(clip_with_a_cut)
    assert (info.width, info.height) == (320, 240) and info.duration_s == pytest.approx(4.0, abs=0.15)
    times = [f.time_s for f in sample_frames(clip_with_a_cut, fps=5)]
    assert len(times) == 20 and np.allclose(np.diff(times), 0.2, atol=0.01)
    assert len(list(sample_frames(clip_with_a_cut, fps=None))) == 40


def test_variable_frame_rate_is_sampled_evenly_in_time(tmp_path, sample_rgb):
    times = sorted(set(np.round(np.concatenate([np.arange(0, 1, 0.02), np.arange(1, 3, 0.25)]), 3)))
    frames = [face_scene(sample_rgb)] * len(times)
    path = write_video(tmp_path / "vfr.mp4", frames, times_s=list(times))
    sampled = [f.time_s for f in sample_frames(path, fps=4)]
    assert sampled[:4] == pytest.approx([0.0, 0.26, 0.5, 0.76], abs=0.02)  # dense part: one frame per 0.25 s
    assert sampled[-1] == pytest.approx(2.75, abs=0.01)
    assert 10 <= len(sampled) <= 13


def test_rotated_phone_video_comes_out_upright(tmp_path, sample_rgb, pipeline):
    sideways = [np.rot90(face_scene(sample_rgb), k=1) for _ in range(10)]  # stored turned counter-clockwise
    path = write_video(tmp_path / "phone.mp4", sideways)
    set_display_rotation(path)
    info = video_info(path)
    assert info.rotation == 270 and (info.width, info.height) == (320, 240)
    frame = next(sample_frames(path))
    assert frame.pixels.shape == (240, 320, 3)
    face = pipeline.analyze(frame.pixels)[0]
    assert abs(face.quality.roll_deg) < 15


def test_frame_at_a_time(clip_with_a_cut):
    assert read_frame_at(clip_with_a_cut, 2.0).std() < 2  # the empty shot
    assert read_frame_at(clip_with_a_cut, 3.0).std() > 20


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty_video"), (b"definitely not a video" * 10, "corrupt_video")],
)
def test_bad_videos_raise_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(UnreadableMediaError) as caught:
        list(sample_frames(path))
    assert caught.value.reason in {reason, "corrupt_video"}


@pytest.fixture
def noisy_clip(tmp_path) -> Path:
    """4 s at 10 fps of noise: the bytes spread evenly over the footage, so half a file is half the frames."""
    rng = np.random.default_rng(0)
    return write_video(tmp_path / "noise.mp4", [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(40)])


def _first_half(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return target


def test_truncated_video_without_its_index_says_so(tmp_path, noisy_clip):
    """The writer puts `moov` (the index) last: cut short, not one frame can be located."""
    with pytest.raises(UnreadableMediaError) as caught:
        list(sample_frames(_first_half(noisy_clip, tmp_path / "cut.mp4")))
    assert caught.value.reason == "corrupt_video" and "no index (moov) found" in str(caught.value)


def test_truncated_faststart_video_keeps_its_frames_and_reports_how_far_it_decoded(tmp_path, noisy_clip):
    import av

    fast = tmp_path / "fast.mp4"
    with av.open(str(noisy_clip)) as reader, av.open(str(fast), "w", options={"movflags": "faststart"}) as writer:
        stream = writer.add_stream_from_template(reader.streams.video[0])
        for packet in reader.demux(reader.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                writer.mux(packet)
    cut = _first_half(fast, tmp_path / "cut.mp4")
    assert video_info(cut).duration_s == pytest.approx(4.0, abs=0.15)  # the header still promises it all
    coverage = Coverage()
    frames = list(sample_frames(cut, fps=None, coverage=coverage))
    assert 5 < len(frames) < 35
    assert coverage.decoded_until_s == pytest.approx(frames[-1].time_s + 0.1, abs=0.01)
    whole = Coverage()
    list(sample_frames(noisy_clip, fps=None, coverage=whole))
    assert whole.decoded_until_s == pytest.approx(4.0, abs=0.01) and whole.damage is None


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf")])
def test_a_sampling_rate_that_never_advances_is_refused(clip_with_a_cut, fps):
    with pytest.raises(ValueError):
        next(sample_frames(clip_with_a_cut, fps=fps))


def test_a_fifo_is_refused_before_ffmpeg_opens_it(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    raised: list[BaseException] = []

    def open_it() -> None:
        try:
            video_info(fifo)  # FFmpeg would block forever waiting for a writer
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=open_it, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "video_info blocked on a FIFO"
    assert isinstance(raised[0], UnreadableMediaError) and raised[0].reason == "not_a_file"


def test_tracker_joins_a_person_across_a_cut(clip_with_a_cut, pipeline):
    tracker = FaceTracker()
    for frame in sample_frames(clip_with_a_cut, fps=5):
        tracker.update(frame.time_s, pipeline.analyze(frame.pixels), frame.pixels)
    tracks = tracker.finish(_describer(pipeline))
    assert len(tracks) == 1
    (first_start, first_end), (second_start, second_end) = tracks[0].segments
    assert first_start == pytest.approx(0.0) and first_end == pytest.approx(1.4, abs=0.21)
    assert second_start == pytest.approx(2.6, abs=0.21) and second_end == pytest.approx(3.8, abs=0.21)
    templates = tracks[0].templates()
    assert len(templates) == 3 and len({t.time_s for t in templates}) == 3


def test_tracker_keeps_two_people_in_one_frame_apart(tmp_path, pipeline):
    from facefind.pipeline.decode import decode_image
    from facefind.samples import sample_path

    team = decode_image(sample_path("gdp.jpg")).pixels
    tracker = FaceTracker()
    for i in range(5):
        tracker.update(i * 0.2, pipeline.analyze(team)[:3], team)
    assert len(tracker.finish(_describer(pipeline))) == 3


@pytest.mark.parametrize(
    "change,continues",
    [
        ("none", True),
        ("another face on the same box", False),
        ("moved away", False),
        ("moved as a performer does between two samples", True),
        ("not embedded for long", False),
        ("a track of one face, short of its templates", True),  # its next faces are ranked, embedded if chosen
    ],
)
def test_only_a_face_that_plainly_continues_its_track_skips_embedding(clip_with_a_cut, pipeline, change, continues):
    from facefind.pipeline.decode import decode_image
    from facefind.samples import sample_path

    pixels = next(sample_frames(clip_with_a_cut)).pixels
    face = pipeline.analyze(pixels)[0]
    tracker = FaceTracker(0.2)
    sightings = 1 if change.startswith("a track of one face") else TEMPLATES_PER_TRACK
    for time_s in np.arange(sightings) * 0.2:
        tracker.update(float(time_s), [face], pixels)
    box, crop, time_s = face.box.copy(), face.aligned, sightings * 0.2
    if change == "another face on the same box":
        crop = pipeline.analyze(decode_image(sample_path("gdp.jpg")).pixels)[0].aligned
    elif change == "moved away":
        box[[0, 2]] += 0.6 * (box[2] - box[0])  # IoU 0.25
    elif change == "moved as a performer does between two samples":
        box[[0, 2]] += 0.4 * (box[2] - box[0])  # IoU 0.43: same look, no other face near
    elif change == "not embedded for long":
        while time_s - (sightings - 1) * 0.2 <= RECHECK_S:
            tracker.update(time_s, [], pixels, continued={0: Sighting(_detection(face, box), crop)})
            time_s += 0.2
    assert tracker.steady(time_s, [box], crop[None]) == ({0: 0} if continues else {})


def _describer(pipeline):
    """What ingest hands FaceTracker.finish: embed and assess, no masked twins."""
    return lambda detections, crops: pipeline.describe(detections, crops, masked_templates=False)


def _detection(face, box=None) -> Detection:
    return Detection(box=face.box if box is None else box, landmarks=face.landmarks, score=face.detection_score)


def test_faces_that_continue_a_track_are_embedded_only_when_chosen_as_templates(clip_with_a_cut, pipeline):
    frames = list(sample_frames(clip_with_a_cut, fps=5))[:6]  # 0-1.0 s: one face, still, within one recheck
    tracker = FaceTracker(0.2)
    embedded: list[int] = []
    describe = _describer(pipeline)
    first = pipeline.analyze(frames[0].pixels, masked_templates=False)[0]
    tracker.update(frames[0].time_s, [first], frames[0].pixels)
    for frame in frames[1:]:
        face = pipeline.analyze(frame.pixels, masked_templates=False)[0]
        assert tracker.steady(frame.time_s, [face.box], face.aligned[None]) == {0: 0}
        tracker.update(frame.time_s, [], frame.pixels, continued={0: Sighting(_detection(face), face.aligned)})
    [track] = tracker.finish(lambda d, c: embedded.append(len(d)) or describe(d, c))
    templates = track.templates()
    assert track.observations == len(frames) and len(templates) == TEMPLATES_PER_TRACK
    assert all(t.face is not None and t.sighting is None for t in templates)
    assert sum(embedded) == TEMPLATES_PER_TRACK - 1  # the chosen sightings only (the first face was embedded)
    assert len({t.time_s for t in templates}) == TEMPLATES_PER_TRACK


def test_a_sighted_template_unlike_its_track_is_dropped(clip_with_a_cut, pipeline):
    from facefind.pipeline.decode import decode_image
    from facefind.samples import sample_path

    pixels = next(sample_frames(clip_with_a_cut)).pixels
    face = pipeline.analyze(pixels)[0]
    stranger = pipeline.analyze(decode_image(sample_path("gdp.jpg")).pixels)[0].aligned
    tracker = FaceTracker(0.2)
    tracker.update(0.0, [face], pixels)
    # Someone else took the place between two rechecks and passed for the track's face.
    tracker.update(0.2, [], pixels, continued={0: Sighting(_detection(face), stranger)})
    tracker.update(0.4, [], pixels, continued={0: Sighting(_detection(face), face.aligned)})
    [track] = tracker.finish(_describer(pipeline))
    assert sorted(t.time_s for t in track.templates()) == [0.0, 0.4]


@pytest.mark.parametrize("fail_after", [None, 2])
def test_run_ahead_yields_everything_in_order_and_raises_what_the_producer_raised(fail_after):
    def produce():
        for i in range(10):
            if i == fail_after:
                raise UnreadableMediaError("broken", reason="corrupt_video")
            yield i

    got = []
    with pytest.raises(UnreadableMediaError) if fail_after else contextlib.nullcontext():
        got.extend(run_ahead(produce(), depth=2))
    assert got == list(range(fail_after if fail_after else 10))


def test_run_ahead_stops_its_producer_when_the_consumer_stops():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield np.zeros(4)
        finally:
            closed.set()

    ahead = run_ahead(endless(), depth=2)
    next(ahead)
    ahead.close()
    assert closed.is_set() and not any(t.name == "facefind-video-ahead" for t in threading.enumerate())


def test_video_sessions_run_on_one_thread_and_photo_sessions_keep_theirs(pipeline, sample_rgb):
    video = pipeline.single_threaded
    assert video is pipeline.single_threaded and video.single_threaded is video  # built once
    for model in ("detector", "recognizer"):
        assert getattr(video, model)._session.get_session_options().intra_op_num_threads == 1
        assert getattr(pipeline, model)._session.get_session_options().intra_op_num_threads != 1
    [face] = pipeline.analyze(sample_rgb, masked_templates=False)
    [same] = video.analyze(sample_rgb, masked_templates=False)
    assert np.allclose(face.box, same.box) and float(face.embedding @ same.embedding) > 0.9999


def test_video_reads_masked_twins_and_upper_faces_only_for_the_faces_it_keeps(pipeline, sample_rgb):
    import cv2

    from facefind.pipeline.align import align_face

    [detection] = pipeline.detector.detect(sample_rgb)
    crop = align_face(sample_rgb, detection.landmarks)
    # Blurred harder and harder: the last two read too low as a whole, so their quality needs the upper face.
    crops = np.stack([crop] + [cv2.GaussianBlur(crop, (0, 0), sigma) for sigma in (4, 11, 12)])
    detections = [detection] * len(crops)
    deferred = pipeline.describe(detections, crops, masked_templates=False, upper_face_norms=False)
    assert [f.quality.upper_face_norm for f in deferred] == [None] * 4 and deferred[0].masked_embedding is None
    completed = pipeline.complete(deferred)
    at_once = pipeline.describe(detections, crops)  # photos: masked twins and upper faces read with the faces
    assert [f.quality.upper_face_norm is not None for f in at_once] == [False, False, True, True]
    # The same quality, but for the last digit a reason may print: complete() knows the norm to 2 decimals.
    without_reasons = [{**f.quality.to_dict(), "reasons": len(f.quality.reasons)} for f in completed]
    assert without_reasons == [{**f.quality.to_dict(), "reasons": len(f.quality.reasons)} for f in at_once]
    assert all(np.allclose(c.masked_embedding, a.masked_embedding, atol=1e-5) for c, a in zip(completed, at_once))
    without_twins = pipeline.complete(deferred, masked_templates=False)  # only the low-reading faces are read again
    assert [f.masked_embedding for f in without_twins] == [None] * 4
    assert [f.quality.upper_face_norm for f in without_twins] == [f.quality.upper_face_norm for f in at_once]


@pytest.mark.parametrize("failing_half", [None, 0, 1])
def test_in_halves_keeps_the_order_uses_two_threads_and_raises_either_halfs_error(failing_half):
    threads: set[str] = set()

    def square(numbers, offsets):
        threads.add(threading.current_thread().name)
        if failing_half is not None and numbers[0] == (0, 5)[failing_half]:
            raise ValueError("half failed")
        return [n * n + o for n, o in zip(numbers, offsets)]

    with pytest.raises(ValueError) if failing_half is not None else contextlib.nullcontext():
        assert in_halves(square, list(range(10)), np.ones(10, int)) == [n * n + 1 for n in range(10)]
        assert len(threads) == 2
    assert in_halves(square, [7], [0]) == [49]  # too few to split: run here
    assert not any(t.name.startswith("facefind-video") for t in threading.enumerate())


@pytest.mark.parametrize("stage", ["decode thread: detect", "main thread: describe", "end: complete"])
def test_an_error_in_any_stage_is_the_videos_error_and_no_thread_outlives_it(clip_with_a_cut, pipeline, monkeypatch,
                                                                             stage):
    from facefind.ingest import IngestOptions, _NoProgress, analyze_video

    video = pipeline.single_threaded
    target, name = {"decode thread: detect": (video.detector, "detect"), "main thread: describe": (video, "describe"),
                    "end: complete": (video, "complete")}[stage]

    def broken(*args, **kwargs):
        raise RuntimeError(f"{name} broke")

    monkeypatch.setattr(target, name, broken)
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.append(
        analyze_video(pipeline, str(clip_with_a_cut), None, IngestOptions(), _NoProgress())), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the video hung"
    [(outcome, thumbnails)] = outcomes
    assert (outcome.status, outcome.reason, thumbnails) == ("failed", "analysis_failed", {})
    assert f"{name} broke" in outcome.message
    assert not any(t.name.startswith("facefind-video") for t in threading.enumerate())
