"""File helpers shared by ingest, search and evidence: open only regular files, bound what is
read into memory, and give paths that are not valid UTF-8 a reversible text form.

Hostile or careless input reaches us as paths: a FIFO blocks ``open`` forever, ``/dev/zero``
never ends, an 8 GB file read whole exhausts memory, and a name in a legacy encoding cannot
be stored in SQLite or JSON. Every file facefind reads for a user passes through here.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

from facefind.errors import NotFoundError, UnreadableMediaError

# Files up to this size are read into memory once (hash and decode from the same bytes);
# larger ones are streamed, and a probe photo larger than this is refused.
READ_WHOLE_MAX_BYTES = 64 * 1024 * 1024
_BLOCK = 1 << 20


class NotARegularFileError(OSError):
    """A FIFO, device or folder where a file was expected: reading it could block or never end."""


def _open_checked(path: str | Path) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading; OSError (NotARegularFileError for anything else) otherwise.

    ``O_NONBLOCK`` makes opening a FIFO return at once; ``fstat`` on the open descriptor then
    checks what was really opened (no race with a file swapped after a ``stat``).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        raise
    except OSError:  # a socket cannot be opened at all (ENXIO): say what it is
        if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise NotARegularFileError(0, "not a regular file (a folder, FIFO, socket or device)", os.fspath(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(0, "not a regular file (a folder, FIFO, socket or device)", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


def open_regular(path: str | Path) -> tuple[BinaryIO, os.stat_result]:
    """Open ``path`` for reading if it is a regular file, without blocking on a FIFO or device.

    Raises NotFoundError, or UnreadableMediaError with reason ``not_a_file``,
    ``permission_denied`` or ``unreadable``.
    """
    try:
        return _open_checked(path)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path_to_text(path)}") from None
    except NotARegularFileError as error:
        raise UnreadableMediaError(error.strerror, reason="not_a_file") from None
    except PermissionError as error:
        raise UnreadableMediaError(f"permission denied: {error.strerror}", reason="permission_denied") from None
    except OSError as error:
        raise UnreadableMediaError(f"cannot open: {error.strerror}", reason="unreadable") from None


def read_bounded(path: str | Path, max_bytes: int = READ_WHOLE_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``: ``too_large`` above, never a MemoryError."""
    handle, info = open_regular(path)
    with handle:
        if info.st_size > max_bytes:
            raise UnreadableMediaError(
                f"file is {info.st_size:,} bytes, above the limit of {max_bytes:,} bytes", reason="too_large"
            )
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we read it
        raise UnreadableMediaError(f"file is larger than the limit of {max_bytes:,} bytes", reason="too_large")
    return data


def read_probe(probe: Path | bytes) -> bytes:
    """The probe's bytes, with a clear error for a missing, unreadable or oversized file.

    A FIFO or device (``/dev/zero``) is refused as ``not_a_file`` before it is opened for
    reading, and a file above READ_WHOLE_MAX_BYTES as ``too_large``: a probe is one photo.
    It lives here, not in search.py, so the CLI's service client can read a probe without
    importing the pipeline.
    """
    if isinstance(probe, bytes):
        return probe
    try:
        return read_bounded(probe)
    except UnreadableMediaError as error:
        raise UnreadableMediaError(f"{path_to_text(probe)}: {error}", reason=error.reason) from None
    except OSError as error:
        raise UnreadableMediaError(f"cannot read {path_to_text(probe)}: {error}", reason="unreadable") from None


def stream_sha256(handle: BinaryIO) -> str:
    """SHA-256 of what is left in ``handle``, read in 1 MiB blocks, so a large file never sits in memory."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(_BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a regular file, streamed; OSError if it cannot be read (NotARegularFileError for a FIFO)."""
    handle, _ = _open_checked(path)
    with handle:
        return stream_sha256(handle)


# -- paths that are not valid UTF-8 --------------------------------------------------------------
# Python gives such names as str with lone surrogates (surrogateescape); SQLite and JSON refuse
# them. Their text form writes each undecodable byte as \xNN (and, in such a path only, a
# backslash as \\), so it is readable, valid UTF-8, and maps back to the one real file.

_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|\\)")


def path_to_text(path: str | Path) -> str:
    """A valid UTF-8 text form of ``path``: the path itself unless it holds undecodable bytes."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    escaped = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape keeps an undecodable byte b as U+DC00 + b
            escaped.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\":
            escaped.append("\\\\")
        else:
            escaped.append(char)
    return "".join(escaped)


def path_from_text(text: str) -> str:
    """The real path (a surrogateescape str, as os functions take it) whose text form is ``text``.

    A valid name that literally contains ``\\xNN`` reads the same as an escaped one; when both
    readings are possible, the one that exists on disk wins (the text itself if both do).
    """
    if "\\x" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)), text)
    if path_to_text(raw) != text or os.path.lexists(text):
        return text
    return raw
