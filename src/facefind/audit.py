"""The audit log: an append-only, hash-chained record of who searched, indexed, exported and erased, and why.

It lives in its own SQLite file (``audit.sqlite3``) so that erasing faces from the catalog never
touches it. Each entry's hash is SHA-256 over the canonical JSON of the entry together with the
previous entry's hash, so an edited, deleted or reordered entry breaks every hash after it. The
head of the chain (last id and hash) is also appended to ``audit-anchor.jsonl`` (fsynced), so
cutting entries off the end, which a chain alone cannot reveal, is caught too.

Each entry is written in one SQLite transaction: a process killed mid-write leaves the chain as
it was before the entry, never half an entry.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from facefind.errors import FaceFindError

AUDIT_FILE = "audit.sqlite3"
ANCHOR_FILE = "audit-anchor.jsonl"
GENESIS = "0" * 64
ANCHOR_EVERY = 100  # a long-running process anchors the head this often, and when it closes

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
    hash TEXT NOT NULL
)
"""
_COLUMNS = ("id", "time", "actor", "client_address", "action", "purpose", "details", "prev_hash", "hash")


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC, the zone entries are written in."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def entry_hash(entry: dict, prev_hash: str) -> str:
    """SHA-256 over the canonical JSON of the entry's fields (all but its hash) and the previous hash."""
    fields = {key: entry[key] for key in _COLUMNS if key not in ("hash", "prev_hash")}
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

    @property
    def intact(self) -> bool:
        return self.problem is None


class AuditLog:
    """The audit log of one library folder; opened per use, so several processes may append safely."""

    def __init__(self, library: Path) -> None:
        self.path = library / AUDIT_FILE
        self.anchor_path = library / ANCHOR_FILE

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        return db

    def append(
        self, actor: str, action: str, details: dict, purpose: dict | None = None,
        client_address: str | None = None, anchor: bool = True,
    ) -> dict:
        """Add one entry, chained to the last; with ``anchor`` also record the new head in the anchor file."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: no two entries chain to the same head
            last = db.execute("SELECT id, hash FROM entries ORDER BY id DESC LIMIT 1").fetchone()
            entry = {
                "id": (last[0] + 1) if last else 1,
                "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "actor": actor, "client_address": client_address, "action": action,
                "purpose": None if purpose is None else json.dumps(purpose, sort_keys=True, ensure_ascii=False),
                "details": json.dumps(details, sort_keys=True, ensure_ascii=False, default=str),
                "prev_hash": last[1] if last else GENESIS,
            }
            entry["hash"] = entry_hash(entry, entry["prev_hash"])
            db.execute(f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       [entry[key] for key in _COLUMNS])
            db.execute("COMMIT")
        except sqlite3.Error as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise FaceFindError(f"the audit log could not be written: {error}", reason="audit_unwritable") from None
        finally:
            db.close()
        if anchor or entry["id"] % ANCHOR_EVERY == 0:
            self.write_anchor(entry["id"], entry["hash"])
        return entry

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

    def verify(self) -> AuditVerdict:
        """Walk the chain; name the first entry that was edited, removed or moved, or a cut-off tail."""
        count, prev_hash, expected_id = 0, GENESIS, 1
        hashes: dict[int, str] = {}
        try:
            for entry in self.entries():
                bad = self._first_fault(entry, expected_id, prev_hash)
                if bad:
                    return AuditVerdict(count, prev_hash, AuditProblem(entry["id"], bad))
                hashes[entry["id"]] = entry["hash"]
                count, prev_hash, expected_id = count + 1, entry["hash"], expected_id + 1
        except sqlite3.DatabaseError as error:
            return AuditVerdict(count, prev_hash, AuditProblem(expected_id, f"the log file is damaged ({error})"))
        for anchor in self._anchors():
            anchored_id, anchored_hash = anchor.get("id"), anchor.get("hash")
            if anchored_id not in hashes:
                return AuditVerdict(count, prev_hash, AuditProblem(
                    anchored_id, f"entry {anchored_id} was anchored but is missing: the log was cut after entry"
                    f" {count}"))
            if hashes[anchored_id] != anchored_hash:
                return AuditVerdict(count, prev_hash, AuditProblem(
                    anchored_id, f"entry {anchored_id} differs from its anchored hash: the log was rewritten"))
        return AuditVerdict(count, prev_hash, None)

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
               actor: str | None = None) -> list[dict]:
        """Entries in a time range (inclusive) and of one actor, each with purpose and details parsed."""
        since, until = _utc(since), _utc(until)
        chosen = []
        for entry in self.entries():
            when = datetime.fromisoformat(entry["time"])
            if (since and when < since) or (until and when > until) or (actor and entry["actor"] != actor):
                continue
            chosen.append({**entry, "purpose": json.loads(entry["purpose"]) if entry["purpose"] else None,
                           "details": json.loads(entry["details"])})
        return chosen

    def export(self, out: Path, fmt: str = "jsonl", since: datetime | None = None,
               until: datetime | None = None, actor: str | None = None) -> int:
        """Write the chosen entries as JSON Lines or CSV (purpose and details as JSON text); returns the count."""
        if fmt not in ("jsonl", "csv"):
            raise FaceFindError(f"unknown export format {fmt!r}; use jsonl or csv", reason="bad_argument")
        entries = self.select(since, until, actor)
        buffer = io.StringIO(newline="")
        if fmt == "jsonl":
            for entry in entries:
                buffer.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        else:
            writer = csv.DictWriter(buffer, fieldnames=_COLUMNS)
            writer.writeheader()
            for entry in entries:
                writer.writerow({**entry, "purpose": json.dumps(entry["purpose"], ensure_ascii=False),
                                 "details": json.dumps(entry["details"], ensure_ascii=False)})
        try:
            out.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        except OSError as error:
            raise FaceFindError(f"cannot write {out}: {error}", reason="unwritable") from None
        return len(entries)
