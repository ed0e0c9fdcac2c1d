"""Evidence export: one self-contained HTML page a person can check a match with.

It shows probe and match side by side: each original image with the face box
and landmarks, the aligned 112x112 crops the model actually compared, the
score, and the provenance (paths, SHA-256 then and now, boxes, quality,
search id and time). Images are embedded, so the page survives being mailed.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import tempfile
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facefind.calibration import CalibrationSet, MatchEvidence
from facefind.calibration.table import format_fmr
from facefind.errors import FaceFindError, NotFoundError, UnreadableMediaError
from facefind.files import file_sha256, path_from_text
from facefind.library import Library
from facefind.pipeline.align import align_face, template_landmarks
from facefind.pipeline.decode import decode_image
from facefind.search import calibrated, pair_table

CONTEXT_MAX_SIDE = 720
CLOSE_UP_SIDE = 300
CROP_VIEW_SIZE = 224
LARGEST_ID = 2**63 - 1  # SQLite's largest integer: a longer id cannot name a stored search


def parse_match_id(match_id: str) -> tuple[int, int]:
    """(search id, rank) from SEARCH-RANK; anything else, or an id no catalog could hold, is a bad argument."""
    parsed = re.fullmatch(r"([0-9]+)-([0-9]+)", match_id)
    if parsed is None or not all(0 < int(part) <= LARGEST_ID for part in parsed.groups()):
        raise FaceFindError(
            f"{match_id!r} is not a match id; use the SEARCH-RANK id printed by `facefind search`",
            reason="bad_argument",
        )
    return int(parsed[1]), int(parsed[2])


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _context_view(pixels: np.ndarray, box: list[float]) -> Image.Image:
    """The whole image (or frame), downscaled, with the face boxed."""
    image = Image.fromarray(pixels)
    scale = min(1.0, CONTEXT_MAX_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    ImageDraw.Draw(image).rectangle([v * scale for v in box], outline=(255, 200, 0), width=3)
    return image


def _close_up_view(pixels: np.ndarray, box: list[float], landmarks: list[list[float]]) -> Image.Image:
    """The face and its surroundings (three face widths), enlarged, with box and landmarks."""
    x1, y1, x2, y2 = box
    side = 1.5 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = max(0, int(cx - side)), max(0, int(cy - side))
    right, bottom = min(pixels.shape[1], int(cx + side)), min(pixels.shape[0], int(cy + side))
    region = Image.fromarray(pixels[top:bottom, left:right])
    scale = CLOSE_UP_SIDE / max(region.size)
    region = region.resize((max(1, round(region.width * scale)), max(1, round(region.height * scale))), Image.LANCZOS)
    draw = ImageDraw.Draw(region)
    draw.rectangle([(x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale],
                   outline=(255, 200, 0), width=2)
    for x, y in landmarks:
        px, py = (x - left) * scale, (y - top) * scale
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(0, 255, 120))
    return region


def _crop_view(pixels: np.ndarray, landmarks: list[list[float]]) -> Image.Image:
    """The aligned crop the recogniser saw, enlarged, with the template landmark positions."""
    crop = Image.fromarray(align_face(pixels, np.asarray(landmarks, dtype=np.float32)))
    crop = crop.resize((CROP_VIEW_SIZE, CROP_VIEW_SIZE), Image.NEAREST)
    draw = ImageDraw.Draw(crop)
    factor = CROP_VIEW_SIZE / 112
    for x, y in template_landmarks():
        draw.ellipse([x * factor - 3, y * factor - 3, x * factor + 3, y * factor + 3], outline=(0, 255, 120), width=2)
    return crop


def _side(path: str | None, sha256: str | None, box, landmarks, max_pixels: int, video_time_s: float | None = None) -> dict:
    """Images and provenance of one side (probe or match); a missing or changed file is reported, not fatal.

    For a video, the context is the frame shown at ``video_time_s``, decoded from the file.
    """
    facts = {"path": path or "(uploaded image, not kept)", "sha256_at_index_time": sha256 or "unknown"}
    if path is None:
        return {"facts": facts, "images": [], "note": "the probe was not a file"}
    try:
        source = path_from_text(path)  # the real file behind a name shown with \xNN escapes
        current = file_sha256(source)  # streamed; refuses a FIFO swapped in for the file
        if video_time_s is not None:
            from facefind.pipeline.video import read_frame_at  # PyAV: only video evidence needs it

            pixels = read_frame_at(Path(source), video_time_s)
        else:
            pixels = decode_image(Path(source), max_pixels=max_pixels).pixels
    except (OSError, UnreadableMediaError) as error:
        return {"facts": facts, "images": [], "note": f"source no longer readable: {error}"}
    facts["sha256_now"] = current
    note = "" if sha256 in (None, current) else "WARNING: the file changed since it was indexed"
    return {
        "facts": facts,
        "images": [
            ("in context", "context", _png_data_uri(_context_view(pixels, box))),
            ("close-up with landmarks", "close-up", _png_data_uri(_close_up_view(pixels, box, landmarks))),
            ("aligned 112x112 crop the model compared", "crop", _png_data_uri(_crop_view(pixels, landmarks))),
        ],
        "note": note,
    }


def export_evidence(
    library: Library, calibration: CalibrationSet, match_id: str, out: Path, max_pixels: int = 100_000_000
) -> Path:
    """Write the evidence page for ``match_id`` (SEARCH-RANK) to ``out``, with the score calibrated as in search."""
    search_id, rank = parse_match_id(match_id)
    if out.is_dir():
        raise FaceFindError(f"{out} is a folder; give the name of the HTML file to write", reason="cannot_write")
    found = library.catalog.search_result(search_id, rank)
    if found is None:
        raise NotFoundError(f"no match {match_id}: search {search_id} has no rank {rank}")
    probe, probe_embedding, face_id, score = found
    records = library.catalog.faces([face_id])
    if face_id not in records:
        raise NotFoundError(f"match {match_id} refers to face {face_id}, which has since been removed")
    match = records[face_id]
    probe_face = probe["face"]
    probe_box = [probe_face["box"][k] for k in ("x1", "y1", "x2", "y2")]
    probe_side = _side(probe.get("path"), probe.get("sha256"), probe_box, probe_face["landmarks"], max_pixels)
    match_side = _side(match.path, match.sha256, match.box, match.landmarks, max_pixels, match.frame_time_s)
    probe_side["facts"].update({"face box": probe_box, "quality": probe_face["quality"]})
    match_side["facts"].update({"face id": face_id, "face box": match.box, "quality": match.quality,
                                "model": match.model_id})
    if match.track is not None:
        match_side["facts"].update({
            "frame time": f"{match.frame_time_s:.2f} s",
            "track on screen": ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in match.track.time_ranges),
            "track best frame": f"{match.track.best_time_s:.2f} s",
        })
    covered = bool(probe_face["quality"].get("lower_face_covered"))
    table = pair_table(calibration, probe_face["quality"]["verdict"], match.quality["verdict"], covered)
    fields = calibrated(table, score)
    logged = library.catalog.search_log_entry(search_id)
    template = resources.files("facefind").joinpath("templates/evidence.html").read_text()
    page = template.format(
        title=html.escape(f"facefind evidence {match_id}"),
        match_id=html.escape(match_id),
        score=f"{score:.4f}",
        verdict=html.escape(fields["verdict"]),
        fmr_text=html.escape(fmr_with_interval(fields)),
        table=html.escape(table.name),
        search_id=search_id,
        rank=rank,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        requested=_requested_by(logged[0], logged[2]) if logged else "",
        probe=_render_side("Probe", probe_side),
        match=_render_side("Match", match_side),
    )
    _write_atomically(out, page.encode("utf-8", "backslashreplace"))  # a stray lone surrogate shows, never fails
    return out


def _requested_by(searched_at: str, params: dict) -> str:
    """Who ran the search, when, and why: the accountability line every evidence page carries."""
    who = params.get("requested_by")
    if not who:
        return f"<p>Search run on {html.escape(searched_at)} (who and why were not recorded: an older library).</p>"
    purpose = who.get("purpose") or {}
    address = f" from {who['client_address']}" if who.get("client_address") else " at this machine's command line"
    return (f"<p class=\"requested\">Search run by <strong>{html.escape(str(who.get('actor')))}</strong>"
            f" ({html.escape(str(who.get('role')))}){html.escape(address)} on {html.escape(searched_at)},"
            f" for case <strong>{html.escape(str(purpose.get('case', '')))}</strong>:"
            f" {html.escape(str(purpose.get('reason', '')))}</p>")


def fmr_with_interval(fields: dict) -> str:
    """'1 in 12.3k (95% interval 1 in 40.0k to 1 in 12.3k)': the claim is the interval's cautious end.

    An FMR beyond the impostor data says so: it is the tail model's extrapolation, not a measurement."""
    low, high = fields["fmr_interval"]
    if fields["fmr_is_bound"] or low == high:
        return fields["fmr_text"]
    low_text = "0" if low <= 0 else format_fmr(MatchEvidence(low, False, 0.0, "", ""))
    source = "extrapolated by the tail model beyond the calibration data, " if fields.get("fmr_source") == "tail_model" else ""
    return (f"{fields['fmr_text']} ({source}95% interval {low_text} to"
            f" {format_fmr(MatchEvidence(high, False, 0.0, '', ''))})")


def _write_atomically(out: Path, data: bytes) -> None:
    """Write ``out`` whole or not at all: a temporary file beside it, then a rename over it.

    A failure part-way (disk full, no permission, a folder in the way) is a clear error and never
    leaves an empty or half-written page behind.
    """
    temporary: str | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, out)
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise FaceFindError(
            f"cannot write the evidence page to {out}: {error.strerror or error}", reason="cannot_write"
        ) from None


def _text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items() if v not in (None, [], ""))
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value) if all(isinstance(v, str) for v in value) else str(value)
    return str(value)


def _render_side(label: str, side: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_text(v))}</td></tr>" for k, v in side["facts"].items()
    )
    figures = "".join(
        f'<figure><img class="{css}" src="{uri}" alt="{label} {caption}"><figcaption>{caption}</figcaption></figure>'
        for caption, css, uri in side["images"]
    )
    note = f'<p class="note">{html.escape(side["note"])}</p>' if side["note"] else ""
    return f"<section><h2>{label}</h2>{note}{figures}<table>{rows}</table></section>"
