"""The audit log: one entry per action, and any edit, deletion, reordering or cut-off tail is caught."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from facefind.audit import AuditLog, Redaction, entry_hash
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def _filled_log(library: Path, entries: int = 5) -> AuditLog:
    log = AuditLog(library)
    for number in range(entries):
        log.append(f"user{number % 2}", "search", {"number": number}, {"case": "C-1", "reason": "a reason"})
    return log


def test_an_untouched_log_verifies(tmp_path):
    log = _filled_log(tmp_path)
    verdict = log.verify()
    assert verdict.intact and verdict.entries == 5
    anchors = [json.loads(line) for line in log.anchor_path.read_text().splitlines()]
    assert anchors[-1]["id"] == 5 and anchors[-1]["hash"] == verdict.head_hash


def _sql(log: AuditLog, *statements: str) -> None:
    with sqlite3.connect(log.path) as db:
        for statement in statements:
            db.execute(statement)


# (how the log is tampered with, the entry verify must name first)
TAMPERING = {
    "edit details": (lambda log: _sql(log, "UPDATE entries SET details = '{\"number\": 7}' WHERE id = 3"), 3),
    "edit actor": (lambda log: _sql(log, "UPDATE entries SET actor = 'user9' WHERE id = 2"), 2),
    "edit purpose": (lambda log: _sql(log, "UPDATE entries SET purpose = NULL WHERE id = 4"), 4),
    "edit time": (lambda log: _sql(log, "UPDATE entries SET time = '2020-01-01T00:00:00+00:00' WHERE id = 1"), 1),
    "edit and rehash": (lambda log: _edit_and_rehash(log, 2), 3),  # the next entry's link gives it away
    "delete a row": (lambda log: _sql(log, "DELETE FROM entries WHERE id = 2"), 3),
    "reorder two rows": (lambda log: _sql(
        log, "UPDATE entries SET id = -3 WHERE id = 3", "UPDATE entries SET id = 3 WHERE id = 2",
        "UPDATE entries SET id = 2 WHERE id = -3"), 2),
    "cut the tail": (lambda log: _sql(log, "DELETE FROM entries WHERE id >= 4"), 4),
    "rewrite the whole chain": (lambda log: _rewrite_chain(log), 1),
}


def _edit_and_rehash(log: AuditLog, entry_id: int) -> None:
    """A forger who knows the hash rule: edits an entry and gives it a correct hash of its own."""
    entry = next(e for e in log.entries() if e["id"] == entry_id)
    entry["details"] = "{}"
    _sql(log, f"UPDATE entries SET details = '{{}}', hash = '{entry_hash(entry, entry['prev_hash'])}'"
              f" WHERE id = {entry_id}")


def _rewrite_chain(log: AuditLog) -> None:
    """Replace the log with a consistent forged chain: only the anchor file can tell."""
    log.path.unlink()
    Path(str(log.path) + "-wal").unlink(missing_ok=True)
    forged = AuditLog(log.path.parent)
    forged.anchor_path = log.path.parent / "elsewhere.jsonl"
    for number in range(5):
        forged.append("forger", "search", {"number": number})


@pytest.mark.parametrize("tamper, first_bad", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_is_detected_and_the_first_bad_entry_named(tamper, first_bad, tmp_path):
    log = _filled_log(tmp_path)
    assert log.verify().intact
    tamper(log)
    verdict = AuditLog(tmp_path).verify()
    assert not verdict.intact and verdict.problem.entry_id == first_bad, verdict.problem


def test_a_byte_flipped_in_the_file_is_detected(tmp_path):
    log = _filled_log(tmp_path)
    with sqlite3.connect(log.path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(log.path.read_bytes())
    at = data.index(b"user1")  # one actor name, in place in the database page
    data[at + 4] = ord("7")
    log.path.write_bytes(bytes(data))
    verdict = AuditLog(tmp_path).verify()
    assert not verdict.intact and verdict.problem.entry_id is not None


def test_a_torn_anchor_line_from_a_crash_is_tolerated(tmp_path):
    log = _filled_log(tmp_path)
    with open(log.anchor_path, "a") as anchors:
        anchors.write('{"id": 6, "ha')
    assert log.verify().intact


def test_a_kill_9_mid_write_never_breaks_the_chain(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from facefind.audit import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "while True: log.append('writer', 'search', {'pad': 'x' * 5000})\n"), str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while AuditLog(tmp_path).head()[0] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    log = AuditLog(tmp_path)
    verdict = log.verify()
    assert verdict.intact and verdict.entries >= 20, verdict.problem
    log.append("after", "search", {})  # and the chain goes on from there
    assert log.verify().intact


def test_appends_keep_one_connection_per_thread(tmp_path, monkeypatch):
    """Opening SQLite and running the schema per entry cost every search ~30 ms: a thread opens the log once."""
    opened = []
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(1) or real_connect(*a, **k))
    for number in range(5):
        AuditLog(tmp_path).append("alice", "search", {"number": number}, anchor=False)  # as api.py: a new AuditLog
    assert len(opened) == 1
    assert AuditLog(tmp_path).verify().entries == 5


def test_appends_from_many_threads_chain_in_order(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: AuditLog(tmp_path).append(f"user{n % 4}", "search", {"n": n}, anchor=False), range(40)))
    verdict = AuditLog(tmp_path).verify()
    assert verdict.intact and verdict.entries == 40, verdict.problem


# -- through the library API: every action writes exactly one entry ------------------------------

def _export(facefind, tmp_path):
    match = facefind.search(probe_sample(), purpose=PURPOSE).matches[0]
    return lambda: facefind.export_evidence(match.match_id, tmp_path / "page.html")


ACTIONS = {
    "index": lambda ff, folder, tmp: lambda: ff.index([folder / "gdp.jpg"], workers=1),
    "search": lambda ff, folder, tmp: lambda: ff.search(probe_sample(), purpose=PURPOSE),
    "verify": lambda ff, folder, tmp: lambda: ff.verify(probe_sample(), folder / "players.jpg", purpose=PURPOSE),
    "evidence_export": lambda ff, folder, tmp: _export(ff, tmp),
    "remove": lambda ff, folder, tmp: lambda: ff.remove(folder / "gdp.jpg"),
    "repair": lambda ff, folder, tmp: lambda: ff.check(repair=True),
    "audit_export": lambda ff, folder, tmp: lambda: ff.audit_export(tmp / "audit.jsonl"),
    "erase": lambda ff, folder, tmp: lambda: ff.erase_person(ff.erasure_plan(probe_sample())),
    "settings": lambda ff, folder, tmp: lambda: ff.change_access("bob", "viewer"),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_writes_exactly_one_entry(action, facefind, photo_folder, tmp_path):
    facefind.index([photo_folder / "players.jpg"], workers=1)
    if action == "remove":
        facefind.index([photo_folder / "gdp.jpg"], workers=1)
    run = ACTIONS[action](facefind, photo_folder, tmp_path)
    before = list(facefind.audit_log.entries())
    run()
    added = list(facefind.audit_log.entries())[len(before):]
    assert [entry["action"] for entry in added] == [action]
    assert facefind.audit_verify().intact


def test_a_search_entry_records_who_why_what_and_what_was_shown(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    result = facefind.search(probe_sample(), purpose=PURPOSE)
    entry = facefind.audit_log.select()[-1]
    details = entry["details"]  # the chained record and its personal payload, together
    assert entry["payload"] == "kept"
    chained = json.loads(list(facefind.audit_log.entries())[-1]["details"])
    assert "probe" not in chained and "path" not in json.dumps(chained)  # personal data is in the payload only
    assert [r["fmr"] for r in chained["results"]] == [m.fmr for m in result.matches]  # the FMRs stay chained
    assert entry["purpose"] == {"case": PURPOSE.case, "reason": PURPOSE.reason}
    assert entry["actor"] == facefind.local_actor().name
    assert details["probe"]["sha256"] == hashlib.sha256(probe_sample().read_bytes()).hexdigest()
    crop = Image.open(io.BytesIO(base64.b64decode(details["probe"]["crop_jpeg_base64"])))
    assert crop.format == "JPEG" and crop.size == (48, 48)
    assert details["gallery_size"] == result.gallery_size and details["search_id"] == result.search_id
    assert [(r["match_id"], r["fmr"]) for r in details["results"]] == [(m.match_id, m.fmr) for m in result.matches]
    assert details["parameters"]["max_fmr"] == result.max_fmr


def test_a_removal_records_its_scope_not_the_file(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    removed = facefind.remove(photo_folder / "gdp.jpg")
    entry = list(facefind.audit_log.entries())[-1]
    assert json.loads(entry["details"]) == {"by": "path", "files": 1, "faces": removed,
                                            "redacted_entries": []}  # indexed as part of the folder: nothing
    assert "gdp" not in entry["details"] and entry["payload_sha256"] is None


def test_export_filters_by_actor_and_time_in_jsonl_and_csv(tmp_path):
    log = _filled_log(tmp_path, entries=6)
    times = [entry["time"] for entry in log.entries()]
    out = tmp_path / "out.jsonl"
    assert log.export(out, "jsonl", actor="user1") == 3
    assert {json.loads(line)["actor"] for line in out.read_text().splitlines()} == {"user1"}
    from datetime import datetime
    since, until = datetime.fromisoformat(times[1]), datetime.fromisoformat(times[3])
    assert log.export(tmp_path / "out.csv", "csv", since=since, until=until) == 3
    rows = list(csv.DictReader((tmp_path / "out.csv").open(newline="")))
    assert [int(row["id"]) for row in rows] == [2, 3, 4] and json.loads(rows[0]["details"]) == {"number": 1}



@pytest.mark.parametrize(("action", "case", "ids"), [("search", None, [1, 3]), (None, "CASE-B", [2, 3]),
                                                     ("search", "CASE-B", [3]), ("login", "CASE-B", [])])
def test_entries_are_chosen_by_action_and_purpose_case(action, case, ids, tmp_path):
    log = AuditLog(tmp_path)
    log.append("ivy", "search", {}, {"case": "CASE-A", "reason": "r"})
    log.append("ivy", "verify", {}, {"case": "CASE-B", "reason": "r"})
    log.append("amy", "search", {}, {"case": "CASE-B", "reason": "r"})
    log.append("amy", "login", {"outcome": "success"})
    assert [entry["id"] for entry in log.select(action=action, case=case)] == ids
    text, count = log.export_text("jsonl", action=action, case=case)
    assert count == len(ids) and [json.loads(line)["id"] for line in text.splitlines()] == ids

# -- personal payloads: redactable without breaking the chain ------------------------------------

def _log_with_payloads(library: Path) -> AuditLog:
    """Entries 1-3: searches with a probe (personal payload); entry 2's probe is /photos/a.jpg."""
    log = AuditLog(library)
    for number, name in enumerate(("b.jpg", "a.jpg", "c.jpg")):
        log.append("ivy", "search", {"search_id": number + 1, "gallery_size": 9,
                                     "probe": {"path": f"/photos/{name}", "sha256": f"{number:064d}"},
                                     "results": [{"match_id": f"{number + 1}-1", "fmr": 1e-6, "face_id": 40 + number,
                                                  "path": "/photos/z.jpg"}]})
    return log


@pytest.mark.parametrize("redaction, redacted", [
    (Redaction(paths=frozenset({"/photos/a.jpg"})), [2]),
    (Redaction(paths=frozenset({"/photos"})), [1, 2, 3]),  # a folder takes what lies under it
    (Redaction(sha256s=frozenset({f"{2:064d}"})), [3]),
    (Redaction(face_ids=frozenset({40})), [1]),  # a result that pointed at a removed face
    (Redaction(search_ids=frozenset({2, 3})), [2, 3]),  # searches whose probe was the erased person
    (Redaction(face_ids=frozenset({99}), paths=frozenset({"/photos/a"})), []),  # no prefix of a name
], ids=["path", "folder", "sha256", "face id", "search ids", "nothing"])
def test_a_redaction_deletes_the_payloads_it_covers_and_the_chain_still_verifies(redaction, redacted, tmp_path):
    log = _log_with_payloads(tmp_path)
    log.append("admin", "remove", {"faces": 1}, redact=redaction)
    assert json.loads(list(log.entries())[-1]["details"])["redacted_entries"] == redacted
    verdict = log.verify()
    assert verdict.intact and verdict.redacted == len(redacted), verdict.problem
    assert sorted(set(range(1, 4)) - set(log.payloads())) == redacted
    states = {entry["id"]: entry["payload"] for entry in log.select()}
    assert states == {**{i: "redacted" if i in redacted else "kept" for i in (1, 2, 3)}, 4: None}
    exported = tmp_path / "out.jsonl"
    log.export(exported)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["payload"] for line in lines[:3]] == [states[1], states[2], states[3]]
    for line in lines[:3]:
        assert ("probe" in line["details"]) == (line["payload"] == "kept")
        assert line["details"]["results"][0]["fmr"] == 1e-6  # what was shown, and how sure, stays
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("audit.sqlite3*"))
    assert (b"/photos/a.jpg" in stored) == (2 not in redacted)  # secure delete and a truncated WAL: no byte left


# (how a payload is tampered with, the entry verify must name)
PAYLOAD_TAMPERING = {
    "edit a payload": (lambda log: _sql(log, "UPDATE payloads SET payload = replace(payload, 'a.jpg', 'x.jpg')"
                                             " WHERE entry_id = 2"), 2),
    "delete a payload unrecorded": (lambda log: _sql(log, "DELETE FROM payloads WHERE entry_id = 3"), 3),
    "swap two payloads": (lambda log: _sql(
        log, "UPDATE payloads SET entry_id = -1 WHERE entry_id = 1", "UPDATE payloads SET entry_id = 1 WHERE entry_id = 2",
        "UPDATE payloads SET entry_id = 2 WHERE entry_id = -1"), 1),
    "drop a commitment": (lambda log: _sql(log, "UPDATE entries SET payload_sha256 = NULL WHERE id = 2"), 2),
}


@pytest.mark.parametrize("tamper, first_bad", PAYLOAD_TAMPERING.values(), ids=PAYLOAD_TAMPERING.keys())
def test_a_tampered_payload_is_tampering_not_redaction(tamper, first_bad, tmp_path):
    log = _log_with_payloads(tmp_path)
    assert log.verify().intact
    tamper(log)
    verdict = AuditLog(tmp_path).verify()
    assert not verdict.intact and verdict.problem.entry_id == first_bad, verdict.problem


def test_removing_a_probe_photo_redacts_its_searches_and_leaves_the_chain_intact(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    removed = photo_folder / "gdp.jpg"
    searches = [facefind.search(removed, purpose=PURPOSE).search_id for _ in range(3)]
    kept = facefind.search(probe_sample(), purpose=PURPOSE)  # no result in gdp.jpg: its payload stays
    facefind.remove(removed)
    remove_entry = list(facefind.audit_log.entries())[-1]
    redacted = json.loads(remove_entry["details"])["redacted_entries"]
    by_search = {e["details"].get("search_id"): e for e in facefind.audit_log.select() if e["action"] == "search"}
    assert sorted(redacted) == sorted(by_search[s]["id"] for s in searches)
    assert by_search[kept.search_id]["payload"] == "kept"
    verdict = facefind.audit_verify()
    assert verdict.intact and verdict.redacted == 3, verdict.problem
