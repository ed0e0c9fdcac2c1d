"""The audit log: an append-only, hash-chained record of who searched, indexed, exported and erased, and why.

It lives in its own SQLite file (``audit.sqlite3``) so that erasing faces from the catalog never
touches it. Each entry's hash is SHA-256 over the canonical JSON of the entry together with the
previous entry's hash, so an edited, deleted or reordered entry breaks every hash after it. The
head of the chain (last id and hash) is also appended to ``audit-anchor.jsonl`` (fsynced), so
cutting entries off the end, which a chain alone cannot reveal, is caught too.

Each entry is written in one SQLite transaction: a process killed mid-write leaves the chain as
it was before the entry, never half an entry.

Personal data is redactable without breaking the chain. An entry's details are split in two: the
chained record (who, when, why, parameters, gallery size, counts, FMRs) and a personal payload
(probe SHA-256, path and crop, result face ids and paths) kept in its own table. The chain covers
only a salted SHA-256 of the payload (a commitment: the salt stops anyone confirming a guessed
payload), so removing a file or erasing a person can delete the payloads that mention them, and
`verify` still checks the chain. The removal's own entry names the entries it redacted (in the
same transaction), so a payload deleted without such a record, or edited, is tampering.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from facefind.errors import FaceFindError

AUDIT_FILE = "audit.sqlite3"
ANCHOR_FILE = "audit-anchor.jsonl"
GENESIS = "0" * 64
ANCHOR_EVERY = 100  # a long-running process anchors the head this often, and when it closes
CHECKPOINT_PATIENCE_S = 5.0  # how long a redaction waits for readers to let the WAL be truncated
WRITERS_PER_THREAD = 4  # audit files a thread keeps open for appends; the least recently used is closed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    client_address TEXT,
    action TEXT NOT NULL,
    purpose TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    payload_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS payloads (
    entry_id INTEGER PRIMARY KEY,
    salt TEXT NOT NULL,
    payload TEXT NOT NULL
);
"""
_COLUMNS = ("id", "time", "actor", "client_address", "action", "purpose", "details", "prev_hash", "hash",
            "payload_sha256")
# Detail keys that identify a face or a file: they go to the redactable payload, never the chain.
PERSONAL_KEYS = frozenset({"probe", "probe_a", "probe_b", "paths", "path", "within", "face_id", "face_ids",
                           "sha256", "thumbnail", "crop_jpeg_base64"})
_PATH_KEYS = ("path", "paths", "within")
REDACTED = "redacted"


@dataclass(frozen=True)
class Redaction:
    """What a removal or erasure took: every audit payload mentioning any of it is deleted."""

    face_ids: frozenset[int] = frozenset()
    paths: frozenset[str] = frozenset()  # files, or folders (everything under them)
    sha256s: frozenset[str] = frozenset()
    search_ids: frozenset[int] = frozenset()  # searches whose probe was the erased person

    def covers(self, public: dict, payload: dict) -> bool:
        if public.get("search_id") in self.search_ids:
            return True
        for key, value in _leaves(payload):
            if ((key in ("face_id", "face_ids") and value in self.face_ids)
                    or (key == "sha256" and value in self.sha256s)
                    or (key in _PATH_KEYS and isinstance(value, str) and self._covers_path(value))):
                return True
        return False

    def _covers_path(self, path: str) -> bool:
        return any(path == gone or path.startswith(gone.rstrip("/") + "/") for gone in self.paths)


def _leaves(value: object, key: str | None = None) -> Iterator[tuple[str | None, object]]:
    """(key, scalar) pairs of a JSON value; a list's items carry the list's key."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _leaves(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, key)
    else:
        yield key, value


def split_personal(details: dict) -> tuple[dict, dict]:
    """(chained details, personal payload): nested records, and rows of a list of them, split field by field."""
    public, personal = {}, {}
    for key, value in details.items():
        if key in PERSONAL_KEYS:
            personal[key] = value
        elif isinstance(value, dict):
            public[key], inner = split_personal(value)
            if inner:
                personal[key] = inner
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            rows = [split_personal(item) for item in value]
            public[key] = [row[0] for row in rows]
            if any(row[1] for row in rows):
                personal[key] = [row[1] for row in rows]
        else:
            public[key] = value
    return public, personal


def merge_personal(public: dict, personal: dict) -> dict:
    """The details as the action gave them: the inverse of :func:`split_personal`."""
    merged = dict(public)
    for key, value in personal.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_personal(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list) and len(merged[key]) == len(value):
            merged[key] = [merge_personal(row, extra) for row, extra in zip(merged[key], value)]
        else:
            merged[key] = value
    return merged


def payload_commitment(salt: str, payload: str) -> str:
    return hashlib.sha256((salt + payload).encode("utf-8")).hexdigest()


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC, the zone entries are written in."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def entry_hash(entry: dict, prev_hash: str) -> str:
    """SHA-256 over the canonical JSON of the entry's fields (all but its hash) and the previous hash.

    An entry without a payload hashes as entries did before payloads existed: old logs still verify.
    """
    fields = {key: entry.get(key) for key in _COLUMNS if key not in ("hash", "prev_hash")}
    if fields["payload_sha256"] is None:
        del fields["payload_sha256"]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((canonical + prev_hash).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    entry_id: int | None
    detail: str


@dataclass(frozen=True)
class AuditVerdict:
    entries: int
    head_hash: str
    problem: AuditProblem | None  # the first bad entry, or None when the chain is whole
    redacted: int = 0  # entries whose personal payload a recorded removal or erasure deleted

    @property
    def intact(self) -> bool:
        return self.problem is None


class _Writer:
    """An open connection for appends, with the identity of the file it opened (to notice a replaced file)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.file_id = db, _file_id(path)

    def still_valid(self, path: Path) -> bool:
        return self.file_id == _file_id(path)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


_writers = threading.local()  # per thread: {audit file path: _Writer}, least recently used first
_inherited: list[threading.local] = []  # a forked child's copy of its parent's: never used, never closed


def _forget_inherited_writers() -> None:
    """A forked child must not use (nor close, which could checkpoint under the parent) the parent's connections."""
    global _writers
    _inherited.append(_writers)
    _writers = threading.local()


os.register_at_fork(after_in_child=_forget_inherited_writers)


class AuditLog:
    """The audit log of one library folder; several processes may append safely (SQLite WAL, one
    writer at a time).

    Appends reuse one connection per thread and file: opening one, running the schema and closing it
    (which checkpoints the WAL) cost ~10-30 ms, paid by every search when each entry opened its own
    (bench/audit_write.py). Readers open their own.
    """

    def __init__(self, library: Path) -> None:
        self.path = library / AUDIT_FILE
        self.anchor_path = library / ANCHOR_FILE

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA secure_delete=ON")  # a redacted payload's bytes are overwritten, not left free
        db.executescript(_SCHEMA)
        if "payload_sha256" not in {row[1] for row in db.execute("PRAGMA table_info(entries)")}:
            db.execute("ALTER TABLE entries ADD COLUMN payload_sha256 TEXT")  # a log from before payloads
        return db

    def append(
        self, actor: str, action: str, details: dict, purpose: dict | None = None,
        client_address: str | None = None, anchor: bool = True, redact: Redaction | None = None,
    ) -> dict:
        """Add one entry, chained to the last; with ``anchor`` also record the new head in the anchor file.

        Personal details go to the entry's payload (see the module doc). With ``redact`` the payloads
        of earlier entries it covers are deleted in the same transaction, and this entry's details
        name them (``redacted_entries``); the WAL is then truncated so no old page keeps them.
        """
        public, personal = split_personal(details)
        db = self._writer()
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: no two entries chain to the same head
            if redact is not None:
                public["redacted_entries"] = self._delete_payloads(db, redact)
            last = db.execute("SELECT id, hash FROM entries ORDER BY id DESC LIMIT 1").fetchone()
            salt = secrets.token_hex(16)
            payload = json.dumps(personal, sort_keys=True, ensure_ascii=False, default=str) if personal else None
            entry = {
                "id": (last[0] + 1) if last else 1,
                "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "actor": actor, "client_address": client_address, "action": action,
                "purpose": None if purpose is None else json.dumps(purpose, sort_keys=True, ensure_ascii=False),
                "details": json.dumps(public, sort_keys=True, ensure_ascii=False, default=str),
                "prev_hash": last[1] if last else GENESIS,
                "payload_sha256": None if payload is None else payload_commitment(salt, payload),
            }
            entry["hash"] = entry_hash(entry, entry["prev_hash"])
            db.execute(f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       [entry[key] for key in _COLUMNS])
            if payload is not None:
                db.execute("INSERT INTO payloads (entry_id, salt, payload) VALUES (?, ?, ?)",
                           (entry["id"], salt, payload))
            db.execute("COMMIT")
            if redact is not None:
                self._truncate_wal(db)
        except sqlite3.Error as error:
            self._drop_writer()  # rolls back what was begun; the next append opens afresh
            raise FaceFindError(f"the audit log could not be written: {error}", reason="audit_unwritable") from None
        except BaseException:  # Ctrl-C mid-entry: a kept connection must not keep holding the write lock
            self._drop_writer()
            raise
        if anchor or entry["id"] % ANCHOR_EVERY == 0:
            self.write_anchor(entry["id"], entry["hash"])
        return entry

    def _writer(self) -> sqlite3.Connection:
        """This thread's open connection to the log, reopened if the file was replaced (a new inode)."""
        open_writers: dict[str, _Writer] = _writers.__dict__.setdefault("by_path", {})
        key = str(self.path)
        writer = open_writers.pop(key, None)
        if writer is not None and not writer.still_valid(self.path):
            writer.db.close()
            writer = None
        if writer is None:
            try:
                writer = _Writer(self._connect(), self.path)
            except sqlite3.Error as error:
                raise FaceFindError(f"the audit log could not be opened: {error}", reason="audit_unwritable") from None
        open_writers[key] = writer  # now the most recently used
        while len(open_writers) > WRITERS_PER_THREAD:
            open_writers.pop(next(iter(open_writers))).db.close()
        return writer.db

    def _drop_writer(self) -> None:
        writer = _writers.__dict__.get("by_path", {}).pop(str(self.path), None)
        if writer is not None:
            writer.db.close()

    @staticmethod
    def _delete_payloads(db: sqlite3.Connection, redact: Redaction) -> list[int]:
        """Delete (secure delete) every payload ``redact`` covers; returns their entry ids."""
        rows = db.execute("SELECT payloads.entry_id, entries.details, payloads.payload FROM payloads"
                          " JOIN entries ON entries.id = payloads.entry_id ORDER BY payloads.entry_id").fetchall()
        covered = [entry_id for entry_id, public, payload in rows
                   if redact.covers(json.loads(public), json.loads(payload))]
        db.executemany("DELETE FROM payloads WHERE entry_id = ?", [(entry_id,) for entry_id in covered])
        return covered

    @staticmethod
    def _truncate_wal(db: sqlite3.Connection) -> None:
        """Copy the WAL into the file and empty it: until then it holds the deleted payloads' old pages.
        A reader can hold the checkpoint back, so it is retried for a while."""
        deadline = time.monotonic() + CHECKPOINT_PATIENCE_S
        while db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)

    def head(self) -> tuple[int, str]:
        if not self.path.exists():
            return 0, GENESIS
        db = self._connect()
        try:
            last = db.execute("SELECT id, hash FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            db.close()
        return (last[0], last[1]) if last else (0, GENESIS)

    def anchor(self) -> None:
        """Record the current head (at close of a long-running process)."""
        entry_id, head = self.head()
        if entry_id:
            self.write_anchor(entry_id, head)

    def write_anchor(self, entry_id: int, head: str) -> None:
        line = json.dumps({"id": entry_id, "hash": head,
                           "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n"
        with open(self.anchor_path, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def _anchors(self) -> list[dict]:
        try:
            lines = self.anchor_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        anchors = []
        for line in lines:
            try:
                anchors.append(json.loads(line))
            except ValueError:
                continue  # a torn last line from a crash mid-append; earlier anchors still hold
        return anchors

    def entries(self) -> Iterator[dict]:
        """Every entry in stored order (rowid), as stored: the order verify checks."""
        if not self.path.exists():
            return
        db = self._connect()
        try:
            for row in db.execute(f"SELECT {', '.join(_COLUMNS)} FROM entries ORDER BY rowid"):
                yield dict(zip(_COLUMNS, row))
        finally:
            db.close()

    def payloads(self) -> dict[int, tuple[str, str]]:
        """Entry id -> (salt, payload JSON) of every payload not redacted."""
        if not self.path.exists():
            return {}
        db = self._connect()
        try:
            return {row[0]: (row[1], row[2]) for row in db.execute("SELECT entry_id, salt, payload FROM payloads")}
        finally:
            db.close()

    def verify(self) -> AuditVerdict:
        """Walk the chain; name the first entry that was edited, removed or moved, or a cut-off tail.

        A payload that no longer matches its entry's commitment was edited; one that is gone must be
        named by a later entry's ``redacted_entries`` (a recorded redaction), or it was deleted.
        """
        count, prev_hash, expected_id = 0, GENESIS, 1
        hashes: dict[int, str] = {}
        missing: list[int] = []
        redactions: dict[int, int] = {}  # redacted entry id -> the entry that redacted it
        try:
            payloads = self.payloads()
            for entry in self.entries():
                bad = self._first_fault(entry, expected_id, prev_hash) or self._payload_fault(entry, payloads)
                if bad:
                    return AuditVerdict(count, prev_hash, AuditProblem(entry["id"], bad))
                if entry["payload_sha256"] is not None and entry["id"] not in payloads:
                    missing.append(entry["id"])
                if "redacted_entries" in entry["details"]:
                    for redacted in json.loads(entry["details"]).get("redacted_entries") or []:
                        redactions.setdefault(redacted, entry["id"])
                hashes[entry["id"]] = entry["hash"]
                count, prev_hash, expected_id = count + 1, entry["hash"], expected_id + 1
        except sqlite3.DatabaseError as error:
            return AuditVerdict(count, prev_hash, AuditProblem(expected_id, f"the log file is damaged ({error})"))
        for entry_id in missing:
            if redactions.get(entry_id, 0) <= entry_id:
                return AuditVerdict(count, prev_hash, AuditProblem(
                    entry_id, "its personal payload is gone but no later removal or erasure redacted it:"
                    " the payload was deleted"))
        for anchor in self._anchors():
            anchored_id, anchored_hash = anchor.get("id"), anchor.get("hash")
            if anchored_id not in hashes:
                return AuditVerdict(count, prev_hash, AuditProblem(
                    anchored_id, f"entry {anchored_id} was anchored but is missing: the log was cut after entry"
                    f" {count}"))
            if hashes[anchored_id] != anchored_hash:
                return AuditVerdict(count, prev_hash, AuditProblem(
                    anchored_id, f"entry {anchored_id} differs from its anchored hash: the log was rewritten"))
        return AuditVerdict(count, prev_hash, None, len(missing))

    @staticmethod
    def _payload_fault(entry: dict, payloads: dict[int, tuple[str, str]]) -> str | None:
        stored = payloads.get(entry["id"])
        if stored is None:
            return None  # none, or redacted: checked once every later entry is known
        if entry["payload_sha256"] is None or payload_commitment(*stored) != entry["payload_sha256"]:
            return "its personal payload does not match its commitment: the payload was edited"
        return None

    @staticmethod
    def _first_fault(entry: dict, expected_id: int, prev_hash: str) -> str | None:
        if entry["id"] != expected_id:
            return f"expected entry {expected_id} here, found {entry['id']}: entries were deleted or reordered"
        if entry["prev_hash"] != prev_hash:
            return "its previous-hash does not match the entry before it: entries were deleted or reordered"
        if entry_hash(entry, prev_hash) != entry["hash"]:
            return "its content does not match its hash: the entry was edited"
        return None

    def select(self, since: datetime | None = None, until: datetime | None = None,
               actor: str | None = None, action: str | None = None, case: str | None = None) -> list[dict]:
        """Entries in a time range (inclusive), of one actor, one action, one purpose case, each with
        purpose and details parsed.

        Details include the personal payload where it is kept; ``payload`` says "kept", "redacted"
        or None (the entry never had one).
        """
        since, until = _utc(since), _utc(until)
        payloads = self.payloads()
        chosen = []
        for entry in self.entries():
            when = datetime.fromisoformat(entry["time"])
            if (since and when < since) or (until and when > until) or (actor and entry["actor"] != actor) \
                    or (action and entry["action"] != action):
                continue
            purpose = json.loads(entry["purpose"]) if entry["purpose"] else None
            if case and (purpose or {}).get("case") != case:
                continue
            details, stored = json.loads(entry["details"]), payloads.get(entry["id"])
            if stored is not None:
                details = merge_personal(details, json.loads(stored[1]))
            state = None if entry["payload_sha256"] is None else ("kept" if stored is not None else REDACTED)
            chosen.append({**entry, "purpose": purpose, "details": details, "payload": state})
        return chosen

    def export(self, out: Path, fmt: str = "jsonl", since: datetime | None = None,
               until: datetime | None = None, actor: str | None = None, action: str | None = None,
               case: str | None = None) -> int:
        """Write the chosen entries as JSON Lines or CSV (purpose and details as JSON text); returns the count."""
        text, count = self.export_text(fmt, since, until, actor, action, case)
        try:
            out.write_text(text, encoding="utf-8", newline="")
        except OSError as error:
            raise FaceFindError(f"cannot write {out}: {error}", reason="unwritable") from None
        return count

    def export_text(self, fmt: str = "jsonl", since: datetime | None = None, until: datetime | None = None,
                    actor: str | None = None, action: str | None = None, case: str | None = None) -> tuple[str, int]:
        """The chosen entries as JSON Lines or CSV text, and how many."""
        if fmt not in ("jsonl", "csv"):
            raise FaceFindError(f"unknown export format {fmt!r}; use jsonl or csv", reason="bad_argument")
        entries = self.select(since, until, actor, action, case)
        buffer = io.StringIO(newline="")
        if fmt == "jsonl":
            for entry in entries:
                buffer.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        else:
            writer = csv.DictWriter(buffer, fieldnames=(*_COLUMNS, "payload"))
            writer.writeheader()
            for entry in entries:
                writer.writerow({**entry, "purpose": json.dumps(entry["purpose"], ensure_ascii=False),
                                 "details": json.dumps(entry["details"], ensure_ascii=False)})
        return buffer.getvalue(), len(entries)
