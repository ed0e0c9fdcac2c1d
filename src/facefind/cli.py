"""The command line: a thin face over :class:`facefind.api.FaceFind`.

Every command takes ``--library`` (or $FACEFIND_LIBRARY) and most take
``--json`` for machine-readable output following the documented schema.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import tempfile
import traceback
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
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

from facefind.access import Actor, Purpose, PurposeRequiredError
from facefind.client import SERVICE_ENV, ServiceClient
from facefind.errors import FaceFindError

if TYPE_CHECKING:  # the API pulls in the models, FAISS and OpenCV: commands import it when they run
    from facefind.api import Backends, FaceFind
    from facefind.schema import SearchResponse

# facefind.pipeline.decode.DEFAULT_MAX_PIXELS and facefind.search.DEFAULT_MAX_FMR, restated so that `--help`
# and a `--service` search start without the pipeline (tests/test_cli_imports.py checks they still agree).
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_FMR = 1e-5

app = typer.Typer(
    help="facefind: find every face in the photos you hold, then ask where else a face appears.\n\n"
    "Start with `facefind index FOLDER`, then `facefind search PHOTO --case REF --reason WHY`."
    " Try `facefind demo` first.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # a message stays one line, whatever the width

EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

# What a file name may hold that must not reach the terminal as it is: C0/C1 controls (escape
# sequences), bidirectional overrides, and the surrogates that stand for bytes that are not UTF-8.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _facefind(model: str | None = None, backends: Backends | None = None) -> FaceFind:
    from facefind.api import FaceFind
    from facefind.pipeline import PipelineConfig

    return FaceFind(state.library, PipelineConfig(detection_size=state.detection_size), max_pixels=state.max_pixels,
                    model=model, backends=backends)


ServiceOption = Annotated[Optional[str], typer.Option(
    "--service", envvar=SERVICE_ENV, help="Ask a running `facefind serve` at this URL (e.g. http://127.0.0.1:8000)"
    " instead of opening the library here: no models or index to load. Its library is searched, not --library;"
    " the API key is read from $FACEFIND_API_KEY.")]


def _searcher(service: str | None) -> FaceFind | ServiceClient:
    """Who answers a search or verify: the configured service, else the library opened here."""
    return ServiceClient(service) if service else _facefind()


def _visible(value: object) -> str:
    """User data as plain text with every control character shown escaped (ESC as \\x1b).

    Paths, names and messages come from files on disk: printed raw, an escape sequence would
    drive the terminal. A byte that is not UTF-8 is shown as the byte (\\xff).
    """
    return _INVISIBLE.sub(_escaped, str(value))


def _escaped(match: re.Match) -> str:
    """One invisible character as text: \\x1b, \\u202e, or \\xff for a byte that is not UTF-8."""
    char = match.group()
    if "\udc80" <= char <= "\udcff":  # how Python keeps such a byte of a file name
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


def _plain(value: object, style: str = "") -> Text:
    """User data as a Rich Text: never parsed as markup (a `[bold]` or `[/]` in a name stays as it is)."""
    return Text(_visible(value), style=style)


def _fail(error: FaceFindError) -> typer.Exit:
    _print_error(error)
    return typer.Exit(EXIT_USAGE)


def _library_call(call):
    """Run one library call on this command's FaceFind, a refusal as a one-line error (exit 2)."""
    try:
        return call(_facefind())
    except FaceFindError as error:
        raise _fail(error) from None


def _print_error(error: FaceFindError) -> None:
    errors.print(Text.assemble(("error:", "bold red"), " ", _plain(error)))


def _print_json(model) -> None:
    """JSON on stdout. A byte of a file name that is not UTF-8 is written as the text \\xff: JSON has
    no way to carry it, and a lone surrogate escape is refused by strict parsers."""
    data = model.model_dump(mode="json") if hasattr(model, "model_dump") else model
    text = json.dumps(data, indent=2, ensure_ascii=False)
    sys.stdout.write(_SURROGATE.sub(lambda match: _escaped(match).replace("\\", "\\\\"), text) + "\n")


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
        label = f"{escape(_visible(Path(path).name))}: {frames} frames, {seconds_done:.1f}/{seconds_total:.1f} s of footage"
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
    model: Annotated[Optional[str], typer.Option(
        help="Models of a NEW library: arcface (default; weights for non-commercial research only) or sface"
             " (YuNet + SFace, Apache-2.0). An existing library keeps the models it was built with.")] = None,
    cluster: Annotated[Optional[str], typer.Option(
        help="Analyse images on a Dask cluster (scheduler address, e.g. tcp://scheduler:8786) instead of"
             " local worker processes; its workers must see PATHS at the same paths. This process still"
             " commits, so an interrupted run resumes as usual (docs/DEPLOY.md).")] = None,
    catalog: Annotated[Optional[str], typer.Option(
        "--catalog", help="Catalog of a NEW library on a PostgreSQL server: postgresql://USER@HOST:PORT/DB?schema=NAME"
             " (one schema per library; the password from $PGPASSWORD or ~/.pgpass). Recorded in the library's"
             " backends.json, so later commands and `facefind serve` only need --library (docs/DEPLOY.md).")] = None,
    index_spec: Annotated[Optional[str], typer.Option(
        "--index", help="Vector index of a NEW library: faiss (default, files in the library folder), pgvector"
             " (in the --catalog PostgreSQL) or milvus://HOST:PORT.")] = None,
) -> None:
    """Find every face in the images and videos under PATHS and store it.

    Videos (MP4, MKV, MOV, AVI, WebM) are sampled at --video-fps; faces are
    tracked across frames and each track keeps its best faces and time ranges.

    Re-running only processes new or changed files; an interrupted run (Ctrl-C,
    crash) resumes where it stopped. Exit code 0: all files processed;
    1: some files could not be read (see `facefind stats`); 130: interrupted.
    """
    backends = None
    if catalog is not None or index_spec is not None:
        from facefind.api import Backends

        backends = Backends(catalog or Backends.catalog, index_spec or Backends.index)
    facefind = _facefind(model, backends)
    try:
        with _progress_bar() as bar:
            report = facefind.index(paths, workers=workers, progress=_RichProgress(bar),
                                    video_fps=None if all_frames else video_fps, cluster=cluster)
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
            errors.print(Text.assemble(("failed", "red"), " ", _plain(path), ": ", _plain(reason, "bold"), " ",
                                       _plain(message)))
        if len(report.failures) > 20:
            errors.print(f"... and {len(report.failures) - 20} more; `facefind stats` counts them by reason")
    if report.interrupted:
        errors.print("[yellow]interrupted:[/] everything processed so far is saved; run the same command to resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_FAILURES)


CaseOption = Annotated[Optional[str], typer.Option(
    "--case", help="Case reference this search is for (required, with --reason; written to the audit log).")]
ReasonOption = Annotated[Optional[str], typer.Option(
    "--reason", help="Why this search is needed, in words (required, with --case; written to the audit log).")]


def _purpose(case: str | None, reason: str | None) -> Purpose:
    """The stated purpose; a missing half is named here, before any work, with both options."""
    if not case or not reason:
        raise _fail(PurposeRequiredError(
            "every search states its purpose: add --case REFERENCE and --reason \"why this search is needed\""))
    return Purpose(case, reason)


@app.command()
def search(
    probe: Annotated[Optional[Path], typer.Argument(help="Photo of the face to look for (or give --face-id).")] = None,
    face: Annotated[Optional[int], typer.Option("--face", "-f", help="Which face of the probe (0 = largest, the default).")] = None,
    face_id: Annotated[Optional[int], typer.Option(
        "--face-id", help="Instead of a photo: a stored face (the face id in earlier results). Where else does it"
        " appear? Nothing is analysed again; the face itself and its video track are not listed.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="At most this many matches.")] = 10,
    max_fmr: Annotated[float, typer.Option(
        help="Show matches whose false match rate is at most this: 1e-5 means 1 in 100,000 pairs of different"
        " people score that high. Matches expected to include more than one false match in this gallery are"
        " hidden too.")] = DEFAULT_MAX_FMR,
    show_all: Annotated[bool, typer.Option("--show-all", help="Show the top-k candidates even beyond the limits, marked.")] = False,
    within: Annotated[Optional[Path], typer.Option("--in", help="Search only this file or folder (e.g. a video: lists every appearance as time ranges).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (schema: docs/search-result.schema.json).")] = False,
    case: CaseOption = None,
    reason: ReasonOption = None,
    service: ServiceOption = None,
) -> None:
    """Find where the face in PROBE appears in the library, best match first.

    `--face-id ID` searches from a face already in the library instead (the
    face id shown in results): where else does this face appear?

    Every match carries its false match rate (FMR), the number of false matches
    that strong to expect in a gallery of this size, and a verdict band:
    strong (FMR <= 1e-5), possible (<= 1e-3), weak (<= 1e-2), not a match.
    """
    try:
        if (probe is None) == (face_id is None) or (face_id is not None and face is not None):
            raise FaceFindError("give either a PROBE photo (with --face N) or --face-id ID", reason="bad_argument")
        if face_id is not None:
            result = _searcher(service).search_face(face_id, top_k=top_k, max_fmr=max_fmr, show_all=show_all,
                                                    within=within, purpose=_purpose(case, reason))
        else:
            result = _searcher(service).search(probe, face=face, top_k=top_k, max_fmr=max_fmr, show_all=show_all,
                                               within=within, purpose=_purpose(case, reason))
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
        console.print(Text.assemble(("  note:", "yellow"), " ", _plain(note)))


def _fmr_shown(calibrated) -> str:
    """The FMR as '1 in N', saying when it lies beyond the measured impostor pairs (the tail model's
    extrapolation) or beyond even that (a bound, already written '<')."""
    return calibrated.fmr_text + (" (extrapolated)" if calibrated.fmr_source == "tail_model" else "")


def _ranges(ranges: list[list[float]]) -> str:
    return ", ".join(f"{_clock(a)}-{_clock(b)}" for a, b in ranges)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _print_search(result: SearchResponse) -> None:
    searched = result.searched_face
    others = len(result.faces_in_probe) - 1
    probe = (f"Stored face {searched.face_id} ({escape(_visible(result.probe_path))})" if searched.face_id is not None
             else f"Probe face {searched.face_index} of {len(result.faces_in_probe)}")
    console.print(
        f"{probe}, quality [bold]{searched.quality.verdict}[/];"
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
            f"  similarity {match.similarity:.3f}  FMR {_fmr_shown(match)}"
            f"  expected false matches {match.expected_false_matches:.2g}  quality {match.face.quality.verdict}"
        )
        where = f"face {match.face.face_id}  box {box.x1:.0f},{box.y1:.0f},{box.x2:.0f},{box.y2:.0f}"
        if match.video:
            where += f"  on screen {_ranges(match.video.time_ranges)}"
        console.print(Text.assemble("        ", _plain(match.source.path), f"  {where}"))
        thumbnail = (match.video.frame_thumbnail if match.video else None) or match.face.thumbnail
        console.print(Text.assemble("        thumbnail ", _plain(thumbnail), style="dim"))
    for appearance in result.appearances:
        console.print(Text.assemble(_plain(appearance.path, "bold"), f": on screen {_ranges(appearance.time_ranges)}"
                                    f" ({appearance.verdict}, best match {appearance.best_match_id})"))
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
    case: CaseOption = None,
    reason: ReasonOption = None,
    service: ServiceOption = None,
) -> None:
    """Compare a face in IMAGE_A with a face in IMAGE_B, with a calibrated false match rate."""
    try:
        result = _searcher(service).verify(image_a, image_b, face_a, face_b, max_fmr, purpose=_purpose(case, reason))
    except FaceFindError as error:
        raise _fail(error) from None
    if as_json:
        _print_json(result)
        return
    call = "[green]likely the same person[/]" if result.same_person else "[yellow]not shown to be the same person[/]"
    console.print(
        f"similarity {result.similarity:.3f}: FMR {_fmr_shown(result)} ([{VERDICT_STYLE[result.verdict]}]{result.verdict}[/]),"
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
    console.print(Text.assemble(f"{len(result.faces)} face(s) in ", _plain(result.path),
                                f" ({result.width}x{result.height}), {source}"))
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
            _plain(q.verdict + (f" ({'; '.join(q.reasons)})" if q.reasons else "")),
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
    console.print(Text.assemble("library: ", _plain(result["library"])))
    console.print(_plain(f"files: {result['files']} ({', '.join(f'{k} {v}' for k, v in result['files_by_status'].items()) or 'none'})"))
    console.print(_plain(f"faces: {result['faces']} in index: {result['index_size']}"
                         f" (quality: {', '.join(f'{k} {v}' for k, v in result['faces_by_quality'].items()) or '-'})"))
    console.print(f"searches logged: {result['searches']}")
    if result["unindexed_by_reason"]:
        table = Table(title="files not indexed, by reason")
        table.add_column("reason")
        table.add_column("files", justify="right")
        for reason, count in result["unindexed_by_reason"].items():
            table.add_row(_plain(reason), str(count))
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


@app.command()
def check(
    repair: Annotated[bool, typer.Option(
        "--repair", help="Rebuild the index from the catalog and thumbnails from the source files; drop damaged"
        " faces (their files are re-analysed by the next `index`) and files nothing refers to.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the library: catalog file, stored embeddings, index, thumbnails, orphan files.

    Exit code 0 when healthy, 1 when problems were found (or are left after --repair).
    """
    try:
        report = _facefind().check(repair)
    except FaceFindError as error:
        raise _fail(error) from None
    if as_json:
        _print_json(report)
    else:
        for problem in report.problems:
            mark = ("repaired", "green") if problem.repaired else ("problem", "bold red")
            console.print(Text.assemble(mark, f" {problem.part}: ", _plain(problem.detail)))
        left = sum(not problem.repaired for problem in report.problems)
        checked = ", ".join(f"{count} {what.replace('_', ' ')}" for what, count in report.checked.items())
        summary = "healthy" if not report.problems else (
            f"{len(report.problems) - left} problem(s) repaired, {left} left" if repair else
            f"{left} problem(s) found; `facefind check --repair` fixes what can be fixed")
        console.print(Text.assemble(_plain(report.library), f": {summary}" + (f" (checked {checked})" if checked else "")))
    if not report.healthy:
        raise typer.Exit(EXIT_FAILURES)


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
    console.print(Text.assemble("wrote ", _plain(written)))


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
    console.print(Text.assemble("wrote ", _plain(out)))


DEMO_OUTPUTS = {"library", "evidence.html"}
DEMO_PURPOSE = Purpose("demo", "showing how facefind works on its built-in sample photos")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo library and evidence page.")] = Path("facefind-demo"),
) -> None:
    """Index the built-in sample photos, search for one player, and export the evidence."""
    from facefind.api import FaceFind
    from facefind.samples import gallery_samples, probe_sample

    if out.exists():
        if not out.is_dir() or {entry.name for entry in out.iterdir()} - DEMO_OUTPUTS:
            raise _fail(FaceFindError(f"{out} exists and is not an earlier demo's folder; pick another --out",
                                      reason="bad_argument"))
        shutil.rmtree(out)  # only an earlier demo's library and page
    facefind = FaceFind(out / "library", max_pixels=state.max_pixels)
    console.print(Text.assemble(("1. index", "bold"), f" {', '.join(p.name for p in gallery_samples())} into ",
                                _plain(out / "library")))
    with _progress_bar() as bar:
        report = facefind.index(gallery_samples(), workers=1, progress=_RichProgress(bar))
    console.print(f"   {report.faces_added} faces in {report.indexed} photos")
    console.print(f"[bold]2. search[/] for the face in {probe_sample().name}")
    result = facefind.search(probe_sample(), top_k=5, purpose=DEMO_PURPOSE)
    _print_search(result)
    if result.matches:
        page = facefind.export_evidence(result.matches[0].match_id, out / "evidence.html")
        console.print(Text.assemble(("3. evidence", "bold"), " for the best match: ", _plain(page)))


@app.command()
def erase(
    person: Annotated[Path, typer.Option("--person", help="A photo of the person to erase.")],
    face: Annotated[Optional[int], typer.Option("--face", "-f", help="Which face of the photo (0 = largest).")] = None,
    max_fmr: Annotated[float, typer.Option(help="Erase faces matching at or below this false match rate.")] = DEFAULT_MAX_FMR,
    opt_out: Annotated[bool, typer.Option("--opt-out", help="Keep one template (no image) so later indexing skips"
                                          " this person's faces (see README, Erasure).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase every face of one person from the library: catalog, index, crops, video tracks, search log."""
    facefind = _facefind()
    try:
        plan = facefind.erasure_plan(person, face, max_fmr)
        if not plan.candidates and not opt_out:
            console.print(f"no face in the library matches this person at FMR <= {max_fmr:g}; nothing erased")
            return
        for candidate in plan.candidates:
            crop = facefind.library_path / "thumbs" / candidate.thumbnail if candidate.thumbnail else "(no crop)"
            console.print(Text.assemble(f"face {candidate.face_id}  FMR {candidate.fmr:.1e}  ", _plain(candidate.path),
                                        "  ", _plain(crop)))
        question = f"erase these {len(plan.candidates)} face(s)" + (" and block this person" if opt_out else "") + "?"
        if not yes and not typer.confirm(question, default=False):
            console.print("nothing erased")
            raise typer.Exit(EXIT_FAILURES)
        report = facefind.erase_person(plan, opt_out)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(f"erased {report.faces_removed} face(s); {report.files_forgotten} file(s) forgotten entirely;"
                  f" {report.searches_scrubbed} search(es) for this person scrubbed"
                  + ("; this person is now blocked from future indexing" if report.opted_out else ""))


access_app = typer.Typer(help="Who may do what on this machine's command line (the library's access.json).",
                          no_args_is_help=True)
app.add_typer(access_app, name="access")


def _print_access(config) -> None:
    for user, role in sorted(config.local_roles.items()):
        console.print(Text.assemble(_plain(user), f": {role}"))
    if not config.local_roles:
        console.print("no roles set: every local user is admin")
    console.print(f"shortest search reason: {config.min_reason_length} characters")


@access_app.command("show")
def access_show() -> None:
    """The local users' roles and the shortest search reason accepted."""
    _print_access(_library_call(lambda ff: ff.access_config()))


@access_app.command("set")
def access_set(
    user: Annotated[Optional[str], typer.Option(help="An OS user name.")] = None,
    role: Annotated[Optional[str], typer.Option(help="admin, investigator, viewer, auditor, or none.")] = None,
    min_reason: Annotated[Optional[int], typer.Option(help="Shortest --reason accepted, in characters.")] = None,
) -> None:
    """Give a local user a role (or none), or set the shortest reason; an admin's change, audited."""
    _print_access(_library_call(lambda ff: ff.change_access(user, role, min_reason)))


collection_app = typer.Typer(
    help="Collections (a case, an archive): named sets of root folders. Once one exists, every user but an admin"
         " searches and sees only the collections granted to them (`facefind users grant NAME COLLECTION`).",
    no_args_is_help=True)
access_app.add_typer(collection_app, name="collection")


def _print_collections(collections: dict[str, list[str]]) -> None:
    for name, roots in sorted(collections.items()):
        console.print(Text.assemble((name, "bold"), ": ", _plain(", ".join(roots))))
    if not collections:
        console.print("no collections: the whole library is one collection every user reads")


@collection_app.command("add")
def collection_add(
    name: Annotated[str, typer.Argument(help="The collection's name, e.g. CASE-2026-014 or archive.")],
    roots: Annotated[list[Path], typer.Argument(help="Its root folders (indexed files under them belong to it).")],
) -> None:
    """Define (or redefine) a collection as root folders; an admin's change, audited."""
    _print_collections(_library_call(lambda ff: ff.set_collection(name, roots)))


@collection_app.command("remove")
def collection_remove(name: Annotated[str, typer.Argument(help="The collection to remove.")]) -> None:
    """Remove a collection (its files stay indexed; users granted only it no longer see them)."""
    _print_collections(_library_call(lambda ff: ff.set_collection(name, None)))


@collection_app.command("list")
def collection_list() -> None:
    """The collections and their root folders."""
    _print_collections(_library_call(lambda ff: ff.collections()))


audit_app = typer.Typer(help="The audit log: who searched, indexed, exported or erased, when and why.",
                         no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain and anchors; name the first edited, deleted or reordered entry.

    Exit code 0 when the log is intact, 1 when it was tampered with.
    """
    try:
        verdict = _facefind().audit_verify()
    except FaceFindError as error:
        raise _fail(error) from None
    if verdict.intact:
        console.print(f"audit log intact: {verdict.entries} entries ({verdict.redacted} with personal data redacted"
                      f" by a removal or erasure), head {verdict.head_hash[:16]}")
        return
    problem = verdict.problem
    errors.print(Text.assemble(("audit log tampered:", "bold red"), f" entry {problem.entry_id}: ", _plain(problem.detail)))
    raise typer.Exit(EXIT_FAILURES)


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _fail(FaceFindError(f"{option} {text!r} is not a date or time like 2026-01-31 or 2026-01-31T18:00",
                                  reason="bad_argument")) from None


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Argument(help="File to write.")],
    since: Annotated[Optional[str], typer.Option(help="From this date/time (ISO, UTC unless a zone is given).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Up to this date/time (ISO, UTC unless a zone is given).")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Only this actor's entries.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
) -> None:
    """Write audit log entries as JSON Lines or CSV."""
    try:
        count = _facefind().audit_export(out, fmt, _moment(since, "--since"), _moment(until, "--until"), actor)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(Text.assemble(f"wrote {count} entries to ", _plain(out)))


users_app = typer.Typer(help="Who may log in to `facefind serve`, with which role.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: scoped, expiring, revocable; shown once, stored hashed.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")


def _account_admin() -> tuple[FaceFind, Actor]:
    """The library and the local user, who must be its admin to manage accounts (and is audited as such)."""
    facefind = _facefind()
    actor = facefind.local_actor()
    try:
        actor.require("settings")
    except FaceFindError as error:
        raise _fail(error) from None
    return facefind, actor


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user's login name.")],
    admin: Annotated[bool, typer.Option("--admin", help="Same as --role admin.")] = False,
    role: Annotated[str, typer.Option(help="admin, investigator, viewer or auditor.")] = "investigator",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Add a user; the password is asked twice (or read from stdin), never taken from the command line."""
    facefind, actor = _account_admin()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        user = facefind.accounts.add_user(name, "admin" if admin else role, password, actor)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(Text.assemble("added ", _plain(user.name), f" ({user.role})"))


@users_app.command("list")
def users_list() -> None:
    """The users and their roles."""
    facefind, _ = _account_admin()
    grants = facefind.accounts.grants()
    for user in facefind.accounts.users():
        granted = "every collection" if user.role == "admin" else ", ".join(grants.get(user.name, [])) or "no collection"
        console.print(Text.assemble(_plain(user.name), f"  {user.role}  since {user.created_at}  reads ",
                                    _plain(granted)))


@users_app.command("role")
def users_role(
    name: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help="admin, investigator, viewer or auditor.")],
) -> None:
    """Change a user's role; their keys keep only the scopes the new role allows. Audited."""
    facefind, actor = _account_admin()
    try:
        user = facefind.change_role(name, role, actor=actor)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(Text.assemble(_plain(user.name), f" is now {user.role}"))


@users_app.command("remove")
def users_remove(name: Annotated[str, typer.Argument(help="The user to remove.")]) -> None:
    """Remove a user: their API keys stop working and their login sessions end at once. Audited."""
    facefind, actor = _account_admin()
    try:
        facefind.remove_user(name, actor=actor)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(Text.assemble("removed ", _plain(name), "; their keys and sessions are gone"))


@users_app.command("grant")
def users_grant(
    name: Annotated[str, typer.Argument(help="The user.")],
    collection: Annotated[str, typer.Argument(help="A collection (`facefind access collection list`).")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the collection away instead.")] = False,
) -> None:
    """Let a user (and their API keys) search and see one collection, or with --revoke stop them. Audited."""
    facefind, actor = _account_admin()
    try:
        grants = facefind.grant_collection(name, collection, revoke, actor=actor)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(Text.assemble(_plain(name), " reads: ", _plain(", ".join(grants.get(name, [])) or "no collection")))


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="Whose key: it acts as them, within its scopes.")],
    scope: Annotated[list[str], typer.Option("--scope", help="search, index, admin or audit (repeatable).")],
    expires: Annotated[str, typer.Option(help="Lifetime, e.g. 30d, 12h, 90m.")] = "30d",
) -> None:
    """Create an API key. Its token is printed once: it is stored only as a hash."""
    from facefind.accounts import parse_duration

    facefind, actor = _account_admin()
    try:
        token, key = facefind.accounts.create_key(user, scope, parse_duration(expires), actor)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(f"key {key.key_id} for {key.user} ({', '.join(key.scopes)}), expires {key.expires_at}:")
    console.print(token, markup=False, highlight=False)
    errors.print("store it now: it cannot be shown again")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, owner, scopes, expiry, state (never the token)."""
    facefind, _ = _account_admin()
    for key in facefind.accounts.keys():
        state = "revoked" if key.revoked else "expired" if key.expired else "active"
        console.print(Text.assemble(f"{key.key_id}  ", _plain(key.user),
                                    f"  {','.join(key.scopes)}  expires {key.expires_at}  {state}"))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (`facefind keys list`).")]) -> None:
    """Revoke a key at once: its next request gets 401."""
    facefind, actor = _account_admin()
    try:
        facefind.accounts.revoke_key(key_id, actor)
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(f"revoked key {key_id}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on. Elsewhere than this machine, put https in front.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    library: Annotated[Optional[Path], typer.Option("--library", "-L", help="Library folder (else the global --library).")] = None,
    allow_root: Annotated[Optional[list[Path]], typer.Option(
        "--allow-root", help="A server folder that may be indexed or read as a probe (repeatable); nothing else may.")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest uploaded image, in MB (413 above).")] = 25.0,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes for index jobs (0 = one per core).")] = 0,
    searches_per_hour: Annotated[int, typer.Option(help="Searches and verifies per user or API key per hour (429 above).")] = 600,
) -> None:
    """Serve the web UI and the HTTP API (/api/v1, documented at /docs) on one library, until Ctrl-C.

    The models load once and the index stays in memory, so a search costs only the search; index
    jobs run inside the server, which is the library's one writer.
    """
    import uvicorn
    from pydantic import ValidationError

    from facefind.api import FaceFind
    from facefind.pipeline import PipelineConfig
    from facefind.service import ServiceSettings, create_app

    roots = [root.resolve() for root in allow_root or []]
    for root in roots:
        if not root.is_dir():
            raise _fail(FaceFindError(f"--allow-root {root} is not a folder", reason="bad_argument"))
    try:
        settings = ServiceSettings(
            library=library or state.library, host=host, port=port, allow_roots=tuple(roots),
            max_upload_bytes=max(1, int(max_upload_mb * 1024 * 1024)), max_pixels=state.max_pixels,
            index_workers=workers, searches_per_hour=searches_per_hour,
        )
    except ValidationError as error:
        raise _fail(FaceFindError(f"bad option: {error.errors()[0]['loc'][0]}: {error.errors()[0]['msg']}",
                                  reason="bad_argument")) from None
    if not settings.is_loopback():
        errors.print(Text.assemble(("warning:", "bold yellow"), f" listening on {host}: anyone who can reach this"
                                   " address can try to log in; serve it over https (a reverse proxy) so cookies and keys stay secret."))
    facefind = FaceFind(settings.library, PipelineConfig(detection_size=state.detection_size),
                        max_pixels=settings.max_pixels)
    try:
        service = create_app(settings, facefind)  # refuses a library without an admin account
        facefind.open()  # fails now, not at the first request, if another process is the library's writer
    except FaceFindError as error:
        raise _fail(error) from None
    console.print(Text.assemble("facefind: serving ", _plain(facefind.library_path), f" at http://{host}:{port}/",
                                " (API docs at /docs); Ctrl-C stops"))
    uvicorn.run(service, host=host, port=port, log_level="warning")


@app.command("dev-services")
def dev_services(
    postgres: Annotated[bool, typer.Option(help="Start PostgreSQL 18 + pgvector (catalog and/or index).")] = True,
    milvus: Annotated[bool, typer.Option(help="Start Milvus standalone 2.3.5 (vector index).")] = True,
    dask: Annotated[bool, typer.Option(help="Start a Dask scheduler and workers (distributed ingest).")] = True,
    dask_workers: Annotated[int, typer.Option(help="Dask worker processes (each loads the models once).")] = 2,
) -> None:
    """Run local servers for development and tests until Ctrl-C, all on 127.0.0.1, from installed wheels
    (no docker, no downloads): PostgreSQL + pgvector, Milvus, a Dask cluster. Prints what to pass to
    facefind; their data is temporary and deleted when they stop. For production see docs/DEPLOY.md.

    Example: `facefind dev-services --no-postgres` then, in another terminal,
    `facefind index PHOTOS --index milvus://127.0.0.1:PORT --cluster tcp://127.0.0.1:PORT`.
    """
    import contextlib
    import faulthandler
    import signal
    import threading

    from facefind.devservices.dask_cluster import dask_cluster
    from facefind.devservices.milvus import milvus_server
    from facefind.devservices.postgres import local_postgres

    if dask_workers < 1:
        raise _fail(FaceFindError("--dask-workers must be at least 1", reason="bad_argument"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C must stop the servers even when this process was started with SIGINT ignored or blocked (both are
    # inherited from the parent: in CI's full test run Ctrl-C was a no-op here and the test waited 90 s).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: where a slow stop is waiting
    with contextlib.ExitStack() as running:
        try:
            if postgres:
                console.print("starting PostgreSQL...")
                url = running.enter_context(local_postgres()).url
                console.print(Text.assemble("PostgreSQL: --catalog ", (url, "bold"), "  (and --index pgvector)"))
            if milvus:
                console.print("starting Milvus...")
                spec = running.enter_context(milvus_server()).spec
                console.print(Text.assemble("Milvus:     --index ", (spec, "bold")))
            if dask:
                console.print(f"starting Dask with {dask_workers} worker(s)...")
                address = running.enter_context(dask_cluster(workers=dask_workers)).address
                console.print(Text.assemble("Dask:       --cluster ", (address, "bold")))
            console.print("running; Ctrl-C stops them all and deletes their data")
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        except RuntimeError as error:  # a server that did not start says why (its log's tail)
            raise _fail(FaceFindError(str(error), reason="dev_service_failed")) from None
        finally:
            console.print("stopping...")


people_app = typer.Typer(
    help="People: faces grouped into persons at a calibrated false match rate. `build` groups every face"
    " (and each later `index` keeps people up to date); name, merge, split, move and hide are kept by every"
    " later run. Example: `facefind people build`, `facefind people list`, `facefind people name 12 \"Ada L.\"`.",
    no_args_is_help=True)
app.add_typer(people_app, name="people")
PersonId = Annotated[int, typer.Argument(help="Person number, as `facefind people list` shows it.")]
FaceId = Annotated[int, typer.Argument(help="Face id, as `facefind people show` shows it.")]


def _link_text(link) -> str:
    return "-" if link is None else f"{link.fmr_text} ({link.similarity:.3f})"


@people_app.command("build")
def people_build(max_fmr: Annotated[float, typer.Option(help="Link faces only at this false match rate or lower.")]
                 = 1e-5) -> None:
    """Group every face into people; manual decisions stay, automatic faces are grouped around them."""
    report = _library_call(lambda ff: ff.people_build(max_fmr))
    console.print(f"{report.people} people, {report.assigned} of {report.faces} faces assigned"
                  f" at FMR <= {report.max_fmr:g} ({report.seconds:.1f} s)")


@people_app.command("list")
def people_list(hidden: Annotated[bool, typer.Option("--hidden", help="Include hidden people.")] = False,
                as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False) -> None:
    """People, most faces first, with cohesion (weakest link) and the nearest other person as FMRs."""
    people = _library_call(lambda ff: ff.people_list(hidden))
    if as_json:
        _print_json([p.model_dump(mode="json") for p in people])
        return
    table = Table("#", "name", "faces", "photos", "videos", "cohesion", "nearest other person")
    for p in people:
        nearest = "-" if p.nearest is None else f"#{p.nearest.person_id} {_link_text(p.nearest)}"
        table.add_row(str(p.person_id), _plain((p.name or "") + (" (hidden)" if p.hidden else "")), str(p.faces),
                      str(p.photos), str(p.videos), _link_text(p.cohesion), nearest)
    console.print(table if people else "no people yet: run `facefind people build`")


@people_app.command("show")
def people_show(person_id: PersonId,
                as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False) -> None:
    """One person: every face with its file (and time in a video), and who put it there."""
    person = _library_call(lambda ff: ff.person(person_id))
    if as_json:
        _print_json(person)
        return
    console.print(Text.assemble((f"#{person.person_id} ", "bold"), _plain(person.name or "(unnamed)"),
                                f": {person.faces} faces, cohesion {_link_text(person.cohesion)}"))
    table = Table("face id", "file", "quality", "by")
    for face in person.face_list:
        where = face.source.path + (f" at {face.video.start_s:.1f}-{face.video.end_s:.1f} s" if face.video else "")
        table.add_row(str(face.face.face_id), _plain(where), face.face.quality.verdict, face.assigned_by)
    console.print(table)


@people_app.command("name")
def people_name(person_id: PersonId, name: Annotated[str, typer.Argument(help="The name; \"\" clears it.")]) -> None:
    """Name a person (their faces are then kept together by later runs)."""
    _library_call(lambda ff: ff.person_rename(person_id, name.strip() or None))
    console.print(Text.assemble(f"person #{person_id} is now ", _plain(name.strip() or "(unnamed)")))


@people_app.command("merge")
def people_merge(person_id: PersonId,
                 others: Annotated[list[int], typer.Argument(help="People whose faces all move into PERSON_ID.")]
                 ) -> None:
    """Merge people into one; refused when two faces of one photo would end up in one person."""
    person = _library_call(lambda ff: ff.person_merge(person_id, others))
    console.print(f"person #{person_id} now has {person.faces} faces")


@people_app.command("split")
def people_split(person_id: PersonId, face: Annotated[Optional[list[int]], typer.Option(
        "--face", help="Face id to take out into a new person (repeatable); none: re-cluster the person strictly.")]
        = None) -> None:
    """Split faces off a person into a new one (or re-cluster the person at a 10x stricter FMR)."""
    people = _library_call(lambda ff: ff.person_split(person_id, face))
    console.print(f"the faces are now in people {', '.join(f'#{p}' for p in people)}")


@people_app.command("move")
def people_move(face_id: FaceId, person_id: PersonId) -> None:
    """Move one face into a person."""
    _library_call(lambda ff: ff.face_move(face_id, person_id))
    console.print(f"face {face_id} is now in person #{person_id}")


@people_app.command("not")
def people_not(face_id: FaceId, person_id: PersonId) -> None:
    """Not this person: the face leaves the person and is never put back by a later run."""
    _library_call(lambda ff: ff.face_not_person(face_id, person_id))
    console.print(f"face {face_id} is marked as not person #{person_id}")


@people_app.command("hide")
def people_hide(person_id: PersonId,
                show: Annotated[bool, typer.Option("--show", help="Show a hidden person again.")] = False) -> None:
    """Hide a person from listings and search results."""
    _library_call(lambda ff: ff.person_hide(person_id, not show))
    console.print(f"person #{person_id} is {'shown' if show else 'hidden'}")


@people_app.command("with")
def people_with(person_id: PersonId) -> None:
    """Who appears with a person: the same photos, or on screen together in the same videos."""
    together = _library_call(lambda ff: ff.person_coappearance(person_id))
    for other in together:
        console.print(Text.assemble((f"#{other.person_id} ", "bold"), _plain(other.name or "(unnamed)"),
                                    f": {len(other.photos)} photo(s), {len(other.videos)} video(s)"))
        for path in other.photos:
            console.print(Text.assemble("  ", _plain(path)))
        for video in other.videos:
            console.print(Text.assemble("  ", _plain(video["path"]), f" on screen together {_ranges(video['time_ranges'])}"))
    if not together:
        console.print(f"no one else appears with person #{person_id}")


@people_app.command("export")
def people_export(fmt: Annotated[str, typer.Option("--format", help="json (node-link) or graphml.")] = "json",
                  out: Annotated[Optional[Path], typer.Option(help="Write to this file instead of stdout.")] = None
                  ) -> None:
    """The co-appearance graph: people as nodes, shared photos and video time as weighted edges."""
    text = _library_call(lambda ff: ff.people_export(fmt))
    if out is None:
        sys.stdout.write(text + "\n")
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as error:
        raise _fail(FaceFindError(f"cannot write {out}: {error}", reason="unwritable")) from None
    console.print(Text.assemble("wrote ", _plain(out)))


watch_app = typer.Typer(
    help="Watchlists: people or reference photos to watch for. Every later `index` checks its new faces (photos"
    " and videos) against the active watchlists and records hits with a calibrated FMR; a webhook can be told."
    " Example: `facefind watch add suspects --photo ref.jpg`, then `facefind index NEW_FOLDER`, `facefind watch hits`.",
    no_args_is_help=True)
app.add_typer(watch_app, name="watch")
HitId = Annotated[int, typer.Argument(help="Hit number, as `facefind watch hits` shows it.")]


@watch_app.command("add")
def watch_add(
    name: Annotated[str, typer.Argument(help="The watchlist's name.")],
    photo: Annotated[Optional[list[Path]], typer.Option(
        "--photo", help="A reference photo (its largest face; only its template is kept). Repeatable.")] = None,
    person: Annotated[Optional[list[int]], typer.Option(
        "--person", help="A person of `facefind people list` (their faces, as they are then). Repeatable.")] = None,
    max_fmr: Annotated[float, typer.Option(help="Raise a hit only at or below this false match rate.")] = DEFAULT_MAX_FMR,
    visible_to: Annotated[Optional[list[str]], typer.Option(
        "--visible-to", help="A user who may see its hits (you always may). Repeatable.")] = None,
    visible_role: Annotated[Optional[list[str]], typer.Option(
        "--visible-role", help="A role whose members may all see its hits. Repeatable.")] = None,
    webhook: Annotated[Optional[str], typer.Option(help="POST each hit as JSON to this http(s) URL.")] = None,
    webhook_secret_env: Annotated[Optional[str], typer.Option(
        help="Name of the environment variable holding the webhook's signing secret (16+ characters).")] = None,
) -> None:
    """Watch for people or reference photos in everything indexed from now on."""
    secret = os.environ.get(webhook_secret_env) if webhook_secret_env else None
    if webhook_secret_env and secret is None:
        raise _fail(FaceFindError(f"the environment variable {webhook_secret_env} is not set", reason="bad_argument"))
    info = _library_call(lambda ff: ff.watch_add(name, person or [], photo or [], max_fmr, visible_to or [],
                                            visible_role or [], webhook, secret))
    console.print(Text.assemble(f"watchlist {info.watchlist_id} ", _plain(info.name),
                                f": {len(info.entries)} entries, hits at FMR <= {info.max_fmr:g}"))


@watch_app.command("list")
def watch_list(as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False) -> None:
    """The watchlists you may see."""
    found = _library_call(lambda ff: ff.watch_list())
    if as_json:
        _print_json([w.model_dump(mode="json") for w in found])
        return
    table = Table("#", "name", "entries", "max FMR", "visible to", "webhook", "state")
    for w in found:
        table.add_row(str(w.watchlist_id), _plain(w.name), _plain(", ".join(e.label for e in w.entries)),
                      f"{w.max_fmr:g}", _plain(", ".join(w.visible_users + [f"role {r}" for r in w.visible_roles])),
                      _plain(w.webhook_url or "-"), "active" if w.active else "paused")
    console.print(table if found else "no watchlists you may see: add one with `facefind watch add`")


@watch_app.command("hits")
def watch_hits(
    state: Annotated[Optional[str], typer.Option(help="Only hits in this state: new, acknowledged or dismissed.")] = None,
    watchlist: Annotated[Optional[int], typer.Option(help="Only this watchlist's hits.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Hits of the watchlists you may see, newest first."""
    page = _library_call(lambda ff: ff.watch_hits(state, watchlist, 0, 500))
    if as_json:
        _print_json(page)
        return
    table = Table("#", "watchlist", "entry", "file", "FMR", "verdict", "quality", "state")
    for hit in page.items:
        where = hit.media_path + ("" if hit.time_s is None else f" at {_clock(hit.time_s)}")
        table.add_row(str(hit.hit_id), _plain(hit.watchlist), _plain(hit.entry), _plain(where), f"{hit.fmr:.2g}",
                      hit.verdict, hit.quality, hit.state)
    console.print(table if page.items else "no hits")


@watch_app.command("ack")
def watch_ack(hit_id: HitId) -> None:
    """Acknowledge a hit: seen, and taken as the listed person (audited)."""
    _library_call(lambda ff: ff.hit_acknowledge(hit_id))
    console.print(f"hit {hit_id} acknowledged")


@watch_app.command("dismiss")
def watch_dismiss(hit_id: HitId) -> None:
    """Dismiss a hit as a wrong match (audited)."""
    _library_call(lambda ff: ff.hit_dismiss(hit_id))
    console.print(f"hit {hit_id} dismissed as a wrong match")


WatchlistId = Annotated[int, typer.Argument(help="Watchlist number, as `facefind watch list` shows it.")]


@watch_app.command("pause")
def watch_pause(
    watchlist_id: WatchlistId,
    resume: Annotated[bool, typer.Option("--resume", help="Resume a paused watchlist instead.")] = False,
) -> None:
    """Pause a watchlist: later `index` runs raise no hits on it, its hits stay (audited). --resume undoes it."""
    info = _library_call(lambda ff: ff.watch_pause(watchlist_id, paused=not resume))
    console.print(Text.assemble(f"watchlist {watchlist_id} ", _plain(info.name),
                                " is active again" if info.active else " is paused"))


@watch_app.command("remove")
def watch_remove(watchlist_id: WatchlistId) -> None:
    """Delete a watchlist with its reference templates, hits and queued webhooks (audited)."""
    removed = _library_call(lambda ff: ff.watch_remove(watchlist_id))
    console.print(f"watchlist {watchlist_id} deleted with {removed} hit{'s' if removed != 1 else ''}")


@watch_app.command("deliver")
def watch_deliver() -> None:
    """Send again every webhook not yet delivered (a receiver that was down)."""
    if not _library_call(lambda ff: ff.watch_deliver()):
        raise _fail(FaceFindError("some webhooks could not be delivered yet; `facefind watch hits` shows why",
                                  reason="webhook_failed"))
    console.print("every webhook is delivered")


def run(args: list[str] | None = None) -> None:
    """The `facefind` program: the app with a last-resort handler, so a user never sees a traceback.

    A FaceFindError that escaped a command is a usage error (exit 2). Anything else is a bug: one
    line on stderr, the traceback in a file for the report, exit 3. Ctrl-C exits 130.
    """
    try:
        app(args=args, prog_name="facefind")
    except FaceFindError as error:
        _print_error(error)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            _print_error(FaceFindError(f"the disk is full: {error}", reason="disk_full"))
            sys.exit(EXIT_USAGE)
        errors.print(Text.assemble(("internal error:", "bold red"), " ", _plain(f"{type(error).__name__}: {error}")))
        errors.print(_plain(_save_traceback(error, sys.argv[1:] if args is None else args)))
        sys.exit(EXIT_INTERNAL)


def _save_traceback(error: Exception, args: list[str]) -> str:
    """Write the traceback to a file in the temp folder; returns the line that tells the user where."""
    try:
        handle, report = tempfile.mkstemp(prefix="facefind-error-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(f"facefind {' '.join(args)}\n\n")
            traceback.print_exception(error, file=file)
    except OSError as failure:
        return f"This is a bug in facefind; its details could not be saved ({failure})."
    return f"This is a bug in facefind. Details are in {report}; please include them in a report."
