"""The command line: a thin face over :class:`facefind.api.FaceFind`.

Every command takes ``--library`` (or $FACEFIND_LIBRARY) and most take
``--json`` for machine-readable output following the documented schema.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from facefind.api import FaceFind
from facefind.errors import FaceFindError
from facefind.pipeline import PipelineConfig
from facefind.pipeline.decode import DEFAULT_MAX_PIXELS
from facefind.schema import SearchResponse
from facefind.search import DEFAULT_MAX_FMR

app = typer.Typer(
    help="facefind: find every face in the photos you hold, then ask where else a face appears.\n\n"
    "Start with `facefind index FOLDER`, then `facefind search PHOTO`. Try `facefind demo` first.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
errors = Console(stderr=True)

EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _State:
    library: Optional[Path] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    detection_size: int = 640


state = _State()


@app.callback()
def main(
    library: Annotated[
        Optional[Path],
        typer.Option("--library", "-L", envvar="FACEFIND_LIBRARY", help="Library folder (default: ~/.local/share/facefind/library)."),
    ] = None,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse images with more pixels than this (decompression-bomb guard).")
    ] = DEFAULT_MAX_PIXELS,
    detection_size: Annotated[
        int, typer.Option(help="Long side, in pixels, images are scaled to for detection; raise it to find tiny faces.")
    ] = 640,
) -> None:
    state.library = library
    state.max_pixels = max_pixels
    state.detection_size = detection_size


def _facefind() -> FaceFind:
    return FaceFind(state.library, PipelineConfig(detection_size=state.detection_size), max_pixels=state.max_pixels)


def _fail(error: FaceFindError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}")
    return typer.Exit(EXIT_USAGE)


def _print_json(model) -> None:
    sys.stdout.write((model.model_dump_json(indent=2) if hasattr(model, "model_dump_json") else json.dumps(model, indent=2)) + "\n")


class _RichProgress:
    """Ingest progress as Rich bars: files (files/s, faces, no-face, failed), and footage within a video."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None
        self.video_task = None
        self.faces = self.no_face = self.failed = 0

    def started(self, total_files: int) -> None:
        self.task = self.progress.add_task("indexing", total=total_files, faces=0, no_face=0, failed=0)

    def file_done(self, path: str, status: str, faces: int) -> None:
        self.faces += faces
        self.no_face += status == "no_face"
        self.failed += status == "failed"
        self.progress.update(self.task, advance=1, faces=self.faces, no_face=self.no_face, failed=self.failed)
        if self.video_task is not None:
            self.progress.remove_task(self.video_task)
            self.video_task = None

    def footage(self, path: str, frames: int, seconds_done: float, seconds_total: float) -> None:
        label = f"{Path(path).name}: {frames} frames, {seconds_done:.1f}/{seconds_total:.1f} s of footage"
        if self.video_task is None:
            self.video_task = self.progress.add_task(label, total=max(seconds_total, 0.001), kind="video")
        self.progress.update(self.video_task, completed=seconds_done, description=label)


class _RateColumn(ProgressColumn):
    """files/s on the files bar; seconds of footage per second on a video's bar."""

    def render(self, task) -> Text:
        unit = "s footage/s" if task.fields.get("kind") == "video" else "files/s"
        return Text(f"{task.speed or 0:5.1f} {unit}", style="green")


class _CountsColumn(ProgressColumn):
    def render(self, task) -> Text:
        if task.fields.get("kind") == "video":
            return Text("")
        return Text.from_markup(
            f"[cyan]{task.fields['faces']}[/] faces, {task.fields['no_face']} without face,"
            f" [red]{task.fields['failed']} failed[/]"
        )


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        _CountsColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=False,
    )


# -- commands ------------------------------------------------------------------------------------


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders and/or image files to index.")],
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (0 = one per CPU core).")] = 0,
    video_fps: Annotated[float, typer.Option(help="Video frames analysed per second of footage.")] = 5.0,
    all_frames: Annotated[bool, typer.Option("--all-frames", help="Analyse every video frame (slow).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run report as JSON.")] = False,
) -> None:
    """Find every face in the images and videos under PATHS and store it.

    Videos (MP4, MKV, MOV, AVI, WebM) are sampled at --video-fps; faces are
    tracked across frames and each track keeps its best faces and time ranges.

    Re-running only processes new or changed files; an interrupted run (Ctrl-C,
    crash) resumes where it stopped. Exit code 0: all files processed;
    1: some files could not be read (see `facefind stats`); 130: interrupted.
    """
    facefind = _facefind()
    try:
        with _progress_bar() as bar:
            report = facefind.index(paths, workers=workers, progress=_RichProgress(bar),
                                    video_fps=None if all_frames else video_fps)
    except FaceFindError as error:
        raise _fail(error) from None
    if as_json:
        _print_json({**report.as_counts(), "seconds": round(report.seconds, 2), "interrupted": report.interrupted,
                     "failures": [{"path": p, "reason": r, "message": m} for p, r, m in report.failures]})
    else:
        rate = report.processed / report.seconds if report.seconds else 0.0
        console.print(
            f"{report.indexed} files with faces ({report.faces_added} faces), {report.no_face} without a face,"
            f" {report.failed} failed, {report.unchanged} unchanged; {rate:.1f} files/s"
        )
        for path, reason, message in report.failures[:20]:
            errors.print(f"[red]failed[/] {path}: [bold]{reason}[/] {message}")
        if len(report.failures) > 20:
            errors.print(f"... and {len(report.failures) - 20} more; `facefind stats` counts them by reason")
    if report.interrupted:
        errors.print("[yellow]interrupted:[/] everything processed so far is saved; run the same command to resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_FAILURES)


@app.command()
def search(
    probe: Annotated[Path, typer.Argument(help="Photo of the face to look for.")],
    face: Annotated[Optional[int], typer.Option("--face", "-f", help="Which face of the probe (0 = largest, the default).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="At most this many matches.")] = 10,
    max_fmr: Annotated[float, typer.Option(
        help="Show matches whose false match rate is at most this: 1e-5 means 1 in 100,000 pairs of different"
        " people score that high. Matches expected to include more than one false match in this gallery are"
        " hidden too.")] = DEFAULT_MAX_FMR,
    show_all: Annotated[bool, typer.Option("--show-all", help="Show the top-k candidates even beyond the limits, marked.")] = False,
    within: Annotated[Optional[Path], typer.Option("--in", help="Search only this file or folder (e.g. a video: lists every appearance as time ranges).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (schema: docs/search-result.schema.json).")] = False,
) -> None:
    """Find where the face in PROBE appears in the library, best match first.

    Every match carries its false match rate (FMR), the number of false matches
    that strong to expect in a gallery of this size, and a verdict band:
    strong (FMR <= 1e-5), possible (<= 1e-3), weak (<= 1e-2), not a match.
    """
    try:
        result = _facefind().search(probe, face=face, top_k=top_k, max_fmr=max_fmr, show_all=show_all, within=within)
    except FaceFindError as error:
        raise _fail(error) from None
    if as_json:
        _print_json(result)
        return
    _print_search(result)


VERDICT_STYLE = {"strong": "bold green", "possible": "yellow", "weak": "red", "not a match": "dim"}


def _print_assessment(assessment) -> None:
    if not assessment.supports_identification:
        console.print("[bold red]This probe cannot support an identification on its own.[/]")
    for note in assessment.notes:
        console.print(f"  [yellow]note:[/] {note}")


def _ranges(ranges: list[list[float]]) -> str:
    return ", ".join(f"{_clock(a)}-{_clock(b)}" for a, b in ranges)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _print_search(result: SearchResponse) -> None:
    searched = result.searched_face
    others = len(result.faces_in_probe) - 1
    console.print(
        f"Probe face {searched.face_index} of {len(result.faces_in_probe)}, quality [bold]{searched.quality.verdict}[/];"
        f" gallery of {result.gallery_size} faces; search {result.search_id}"
        + (f"; pick another face with --face 1..{others}" if others else "")
    )
    _print_assessment(result.probe_assessment)
    if not result.matches:
        console.print(
            f"[bold]No match.[/] No face in the library scores with FMR <= {result.max_fmr:g} and at most one"
            " false match expected in this gallery. Use --show-all to see the nearest candidates anyway."
        )
        return
    for match in result.matches:
        box = match.face.box
        limits = "" if match.within_limits else " [dim](beyond limits)[/]"
        console.print(
            f"[bold]{match.match_id:>6}[/]  [{VERDICT_STYLE[match.verdict]}]{match.verdict}[/]{limits}"
            f"  similarity {match.similarity:.3f}  FMR {match.fmr_text}"
            f"  expected false matches {match.expected_false_matches:.2g}  quality {match.face.quality.verdict}"
        )
        where = f"box {box.x1:.0f},{box.y1:.0f},{box.x2:.0f},{box.y2:.0f}"
        if match.video:
            where += f"  on screen {_ranges(match.video.time_ranges)}"
        console.print(f"        {match.source.path}  {where}", highlight=False)
        thumbnail = (match.video.frame_thumbnail if match.video else None) or match.face.thumbnail
        console.print(f"        thumbnail {thumbnail}", style="dim", highlight=False)
    for appearance in result.appearances:
        console.print(f"[bold]{appearance.path}[/]: on screen {_ranges(appearance.time_ranges)}"
                      f" ({appearance.verdict}, best match {appearance.best_match_id})")
    console.print(
        "FMR: how often two different people score this high. A match is a lead to check, not an identification:"
        " `facefind export-evidence MATCH_ID out.html` shows both faces side by side."
    )


@app.command()
def verify(
    image_a: Annotated[Path, typer.Argument(help="First photo.")],
    image_b: Annotated[Path, typer.Argument(help="Second photo.")],
    face_a: Annotated[Optional[int], typer.Option(help="Face of the first photo (0 = largest).")] = None,
    face_b: Annotated[Optional[int], typer.Option(help="Face of the second photo (0 = largest).")] = None,
    max_fmr: Annotated[float, typer.Option(help="Call the faces the same person only at or below this false match rate.")] = DEFAULT_MAX_FMR,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Compare a face in IMAGE_A with a face in IMAGE_B, with a calibrated false match rate."""
    try:
        result = _facefind().verify(image_a, image_b, face_a, face_b, max_fmr)
    except FaceFindError as error:
        raise _fail(error) from None
    if as_json:
        _print_json(result)
        return
    call = "[green]likely the same person[/]" if result.same_person else "[yellow]not shown to be the same person[/]"
    console.print(
        f"similarity {result.similarity:.3f}: FMR {result.fmr_text} ([{VERDICT_STYLE[result.verdict]}]{result.verdict}[/]),"
        f" limit {result.max_fmr:g}: {call}"
    )
    console.print(f"quality: A {result.face_a.quality.verdict}, B {result.face_b.quality.verdict}")
    _print_assessment(result.probe_assessment)


@app.command()
def faces(
    file: Annotated[Path, typer.Argument(help="An image file.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the faces in FILE: stored ones if it is indexed, otherwise detected now."""
    try:
        result = _facefind().faces(file)
    except FaceFindError as error:
        raise _fail(error) from None
    if as_json:
        _print_json(result)
        return
    source = "from the library" if result.indexed else "detected now (file not indexed)"
    console.print(f"{len(result.faces)} face(s) in {result.path} ({result.width}x{result.height}), {source}")
    table = Table()
    for column in ("#", "face id", "box (x1,y1,x2,y2)", "detection", "eye dist px", "sharpness", "yaw", "pitch", "covered", "quality"):
        table.add_column(column)
    for face in result.faces:
        q = face.quality
        table.add_row(
            str(face.face_index), str(face.face_id or "-"),
            f"{face.box.x1:.0f},{face.box.y1:.0f},{face.box.x2:.0f},{face.box.y2:.0f}",
            f"{face.detection_score:.2f}", f"{q.eye_distance_px:.0f}", f"{q.sharpness:.0f}",
            f"{q.yaw_deg:.0f}", f"{q.pitch_deg:.0f}",
            ", ".join(part for part, on in (("lower face", q.lower_face_covered), ("eyes", q.eyes_covered)) if on) or "-",
            q.verdict + (f" ({'; '.join(q.reasons)})" if q.reasons else ""),
        )
    console.print(table)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Files, faces and searches in the library; unindexed files counted by reason."""
    try:
        result = _facefind().stats()
    except FaceFindError as error:
        raise _fail(error) from None
    if as_json:
        _print_json(result)
        return
    console.print(f"library: {result['library']}")
    console.print(f"files: {result['files']} ({', '.join(f'{k} {v}' for k, v in result['files_by_status'].items()) or 'none'})")
    console.print(f"faces: {result['faces']} in index: {result['index_size']}"
                  f" (quality: {', '.join(f'{k} {v}' for k, v in result['faces_by_quality'].items()) or '-'})")
    console.print(f"searches logged: {result['searches']}")
    if result["unindexed_by_reason"]:
        table = Table(title="files not indexed, by reason")
        table.add_column("reason")
        table.add_column("files", justify="right")
        for reason, count in result["unindexed_by_reason"].items():
            table.add_row(reason, str(count))
        console.print(table)


@app.command()
def remove(
    path: Annotated[Optional[Path], typer.Argument(help="File or folder to forget.")] = None,
    face: Annotated[Optional[list[int]], typer.Option("--face", help="Face id to forget (repeatable).")] = None,
) -> None:
    """Remove a file, a folder's files, or single faces from the catalog and the index."""
    try:
        removed = _facefind().remove(path, face)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(f"removed {removed} face(s)")


@app.command("export-evidence")
def export_evidence(
    match_id: Annotated[str, typer.Argument(help="A match id printed by `facefind search`, e.g. 3-1.")],
    out: Annotated[Path, typer.Argument(help="HTML file to write.")],
) -> None:
    """Write an HTML page with probe and match side by side, for a person to check."""
    try:
        written = _facefind().export_evidence(match_id, out)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(f"wrote {written}")


@app.command()
def calibrate(
    lfw: Annotated[Path, typer.Option(help="LFW-layout folder: one sub-folder of photos per person.")],
    out: Annotated[Path, typer.Option(help="Calibration file to write (JSON).")] = Path("calibration.json"),
    cache: Annotated[Optional[Path], typer.Option(help="Folder to cache embeddings in between runs.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (0 = one per core).")] = 0,
) -> None:
    """Fit score -> false match rate tables on labelled faces, and check them on unseen people.

    Half of the people are used to fit, the other half to check; both results
    are stored in the file with its provenance. The shipped tables were made with
    `facefind calibrate --lfw ../shared/data/lfw --out src/facefind/calibration/data/w600k_mbf.json`.
    """
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=errors) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            result = _facefind().calibrate(lfw, out, cache, workers, progress)
        except FaceFindError as error:
            raise _fail(error) from None
    for name, check in result.checks.items():
        table = Table(title=f"held-out check: {name}")
        for column in ("target FMR", "threshold", "claimed FMR", "measured FMR", "ratio", "TAR"):
            table.add_column(column)
        for row in check["after_widening"]:
            ratio = row["ratio_measured_to_claimed"]
            table.add_row(f"{row['target_fmr']:g}", f"{row['threshold']:.3f}", f"{row['claimed_fmr']:.2g}",
                          f"{row['measured_fmr']:.2g}", "-" if ratio is None else f"{ratio:.2f}",
                          "-" if row["tar"] is None else f"{row['tar']:.4f}")
        console.print(table)
    console.print(f"wrote {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo library and evidence page.")] = Path("facefind-demo"),
) -> None:
    """Index the built-in sample photos, search for one player, and export the evidence."""
    from facefind.samples import gallery_samples, probe_sample

    if out.exists():
        shutil.rmtree(out)
    facefind = FaceFind(out / "library", max_pixels=state.max_pixels)
    console.print(f"[bold]1. index[/] {', '.join(p.name for p in gallery_samples())} into {out / 'library'}")
    with _progress_bar() as bar:
        report = facefind.index(gallery_samples(), workers=1, progress=_RichProgress(bar))
    console.print(f"   {report.faces_added} faces in {report.indexed} photos")
    console.print(f"[bold]2. search[/] for the face in {probe_sample().name}")
    result = facefind.search(probe_sample(), top_k=5)
    _print_search(result)
    if result.matches:
        page = facefind.export_evidence(result.matches[0].match_id, out / "evidence.html")
        console.print(f"[bold]3. evidence[/] for the best match: {page}")
