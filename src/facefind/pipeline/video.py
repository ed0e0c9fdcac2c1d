"""Decode video with PyAV: sample frames by presentation time, honour rotation, explain failures.

Frames are chosen by their timestamps, not their index, so variable-frame-rate
phone footage is sampled evenly in time. Only the sampled frames are converted
to RGB; the rest are decoded (inter-frame codecs need them) and dropped.
"""

from __future__ import annotations

import math
import os
import queue
import stat
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import av
import numpy as np

from facefind.errors import UnreadableMediaError

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm"})
_ISO_MEDIA_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})  # boxes; the index is the `moov` box
DEFAULT_SAMPLE_FPS = 5.0
T = TypeVar("T")
R = TypeVar("R")
MIN_SPLIT = 4  # fewer items than this run in the calling thread: a thread costs more than half of them


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream (upright dimensions)."""

    width: int
    height: int
    duration_s: float
    average_fps: float
    codec: str
    rotation: int


@dataclass(frozen=True)
class VideoFrame:
    time_s: float
    pixels: np.ndarray  # upright RGB uint8


@dataclass
class Coverage:
    """How much of the footage :func:`sample_frames` decoded: a truncated file stops short of the
    duration its header promises, and what is recorded must say so."""

    decoded_until_s: float = 0.0  # end of the last decoded frame
    damage: str | None = None  # the decoder error that ended decoding early, if any


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _open(path: Path):
    """Open a video container; a FIFO or device is refused before FFmpeg could block on it."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UnreadableMediaError("not a regular file (a folder, FIFO or device)", reason="not_a_file")
        container = av.open(str(path))
    except av.error.InvalidDataError as error:
        if _lacks_index(path):
            raise UnreadableMediaError(
                "truncated video: no index (moov) found, so no frame can be located", reason="corrupt_video"
            ) from None
        raise UnreadableMediaError(f"not a readable video: {error}", reason="corrupt_video") from None
    except PermissionError as error:
        raise UnreadableMediaError(str(error), reason="permission_denied") from None
    except (av.error.FFmpegError, OSError) as error:
        raise UnreadableMediaError(f"cannot open video: {error}", reason="corrupt_video") from None
    if not container.streams.video:
        container.close()
        raise UnreadableMediaError("the file has no video stream", reason="no_video_stream")
    return container


def _lacks_index(path: Path) -> bool:
    """Whether an MP4/MOV file has media data but no `moov` box: cut off before its index was written.

    Walks the top-level boxes (8-byte headers, 16 with a 64-bit size) without reading their contents.
    """
    if path.suffix.lower() not in _ISO_MEDIA_SUFFIXES:
        return False
    seen = set()
    with open(path, "rb") as handle:
        end = os.fstat(handle.fileno()).st_size
        position = 0
        while position + 8 <= end:
            handle.seek(position)
            size, kind = struct.unpack(">I4s", handle.read(8))
            if size == 1:
                size = struct.unpack(">Q", handle.read(8))[0]
            elif size == 0:
                size = end - position
            if size < 8:
                break
            seen.add(kind)
            position += size
    return b"moov" not in seen and bool(seen & {b"mdat", b"ftyp"})


def video_info(path: Path) -> VideoInfo:
    """Dimensions, duration, frame rate, codec and rotation, without decoding the whole file."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.codec_context is None or not stream.codec_context.name:
            raise UnreadableMediaError("unsupported video codec", reason="unsupported_codec")
        duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
        rotation = _rotation(container, stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation % 180:
            width, height = height, width
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        return VideoInfo(width, height, duration, fps, stream.codec_context.name, rotation)


def _rotation(container, stream) -> int:
    """Display rotation in degrees from the first frame's display matrix (or old 'rotate' metadata)."""
    if "rotate" in stream.metadata:
        return int(float(stream.metadata["rotate"])) % 360
    try:
        frame = next(container.decode(stream))
    except (StopIteration, av.error.FFmpegError):
        return 0
    finally:
        container.seek(0)
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360


def _upright(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    """RGB pixels turned as the player would show them (display matrix angles are counter-clockwise)."""
    pixels = frame.to_ndarray(format="rgb24")
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, k=turns)) if turns else pixels


def sample_frames(
    path: Path,
    fps: float | None = DEFAULT_SAMPLE_FPS,
    max_pixels: int = 100_000_000,
    coverage: Coverage | None = None,
) -> Iterator[VideoFrame]:
    """Frames at about ``fps`` per second of footage (every frame when ``fps`` is None).

    Raises ValueError for an ``fps`` that is not above 0 (it would never advance), and
    UnreadableMediaError for files that cannot be opened or that hold no decodable frame;
    a file truncated part-way yields the frames before the damage, and ``coverage``
    (when given) is filled in with how far decoding got.
    """
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be more than 0, not {fps}")
    coverage = coverage if coverage is not None else Coverage()
    info = video_info(path)
    if info.width * info.height > max_pixels:
        raise UnreadableMediaError(f"video frames are {info.width}x{info.height}, above the pixel limit", reason="too_large")
    interval = 1.0 / fps if fps else 0.0
    next_time = 0.0
    produced = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                time_s = float(frame.pts * stream.time_base) - start
                frame_s = float(frame.duration * stream.time_base) if getattr(frame, "duration", None) else \
                    (1.0 / info.average_fps if info.average_fps else 0.0)
                coverage.decoded_until_s = max(coverage.decoded_until_s, time_s + frame_s)
                if time_s + 1e-6 < next_time:
                    continue
                while interval and next_time <= time_s + 1e-6:  # a fixed grid: no drift on irregular timing
                    next_time += interval
                produced += 1
                yield VideoFrame(time_s=round(time_s, 3), pixels=_upright(frame, info.rotation))
        except av.error.FFmpegError as error:
            if produced == 0:
                raise UnreadableMediaError(f"no decodable frame: {error}", reason="corrupt_video") from None
            coverage.damage = str(error)
            return  # truncated: keep what decoded
    if produced == 0:
        raise UnreadableMediaError("the video stream holds no frames", reason="empty_video")


def read_frame_at(path: Path, time_s: float) -> np.ndarray:
    """The upright frame shown at ``time_s``: seek to the keyframe before it, decode forward."""
    rotation = video_info(path).rotation
    with _open(path) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        container.seek(int((time_s + start) / stream.time_base), stream=stream, backward=True, any_frame=False)
        last = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            last = frame
            if float(frame.pts * stream.time_base) - start >= time_s - 1e-3:
                break
        if last is None:
            raise UnreadableMediaError(f"no frame at {time_s:.2f} s", reason="corrupt_video")
        return _upright(last, rotation)


def run_ahead(items: Iterator[T], depth: int = 4) -> Iterator[T]:
    """``items`` produced in a background thread, up to ``depth`` ahead of the consumer.

    Decoding and detection are native code that releases the GIL, so they overlap with the
    consumer's embedding and tracking. The producer's exceptions are raised in the consumer;
    a consumer that stops early (cancel, error) stops the producer before this returns.
    """
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    finished = object()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((finished, None))
        except BaseException as error:  # handed to the consumer, which raises it
            put((finished, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator is closed in the thread that ran it: its files are shut here

    producer = threading.Thread(target=produce, name="facefind-video-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item, error = slots.get()
            if item is finished:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        producer.join()


def in_halves(function: Callable[..., list[R]], *columns: Sequence) -> list[R]:
    """``function(*columns)``, its columns cut in two and the halves run at once, one in a helper thread.

    The end of a video (embedding the chosen templates and their masked twins) has nothing left to
    overlap with: with one-thread model sessions, whose runs release the GIL, halves use both cores.
    Results keep the input order; an error in either half is raised here, after both halves stop.
    """
    count = len(columns[0])
    if count < MIN_SPLIT:
        return function(*columns)
    middle = (count + 1) // 2
    with ThreadPoolExecutor(1, thread_name_prefix="facefind-video-half") as helper:
        second = helper.submit(function, *(column[middle:] for column in columns))
        first = function(*(column[:middle] for column in columns))
        return first + second.result()
