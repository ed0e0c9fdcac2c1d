import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from facefind.catalog import MediaOutcome, NewFace
from facefind.catalog.sqlite import SqliteCatalog
from facefind.errors import DamagedLibraryError, DiskFullError, FaceFindError, LibraryBusyError, NotFoundError
from facefind.index import FaissFlatIndex
from facefind.library import Library


def _add_faces(library: Library, path: str, count: int) -> list[int]:
    vectors = np.eye(4, dtype=np.float32)[:count]
    faces = [NewFace(i, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, {"verdict": "good"}, "m", vectors[i], None) for i in range(count)]
    result = library.catalog.commit_outcomes([MediaOutcome(path=path, status="indexed", faces=faces)])
    library.apply_commit(result)
    return result.added_ids


def test_second_writer_gets_a_clear_error(tmp_path):
    with Library(tmp_path, "m", 4, writable=True):
        with pytest.raises(LibraryBusyError, match="another facefind process"):
            Library(tmp_path, "m", 4, writable=True)
        with Library(tmp_path, "m", 4) as reader:  # readers are never blocked
            assert len(reader.index) == 0


def test_stale_index_is_rebuilt_from_the_catalog(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        library.save_index()
        _add_faces(library, "/a.jpg", 3)  # committed to the catalog, index file never saved: a crash
    with Library(tmp_path, "m", 4) as reopened:
        assert reopened.rebuilt_index
        assert len(reopened.index) == 3


def test_damaged_index_file_is_rebuilt(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        _add_faces(library, "/a.jpg", 2)
        library.save_index()
    (tmp_path / "index" / "faiss.index").write_bytes(b"\0" * 10)
    with Library(tmp_path, "m", 4) as reopened:
        assert len(reopened.index) == 2


def test_fresh_index_is_loaded_not_rebuilt(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        _add_faces(library, "/a.jpg", 2)
        library.save_index()
    assert json.loads((tmp_path / "index" / "state.json").read_text())["model_id"] == "m"
    with Library(tmp_path, "m", 4) as reopened:
        assert not reopened.rebuilt_index and len(reopened.index) == 2


def test_a_library_refuses_another_model(tmp_path):
    Library(tmp_path, "model-a", 4, writable=True).close()
    with pytest.raises(FaceFindError, match="cannot be compared"):
        Library(tmp_path, "model-b", 4)


# -- the index is verified against the catalog, and rebuilt when it does not verify -------------------


def _library_with_faces(root, count: int = 3) -> list[int]:
    with Library(root, "m", 4, writable=True) as library:
        ids = _add_faces(library, "/a.jpg", count)
        library.save_index()
    return ids


def _replace_index_file(root, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Overwrite faiss.index behind the library's back, leaving state.json naming the current revision."""
    damaged = FaissFlatIndex(4)
    damaged.add(ids, vectors)
    damaged.save(root / "index" / "faiss.index")


@pytest.mark.parametrize("writable", [False, True])
@pytest.mark.parametrize("damage", ["vectors", "id_map", "bytes", "missing"])
def test_a_damaged_index_is_not_trusted_but_rebuilt(tmp_path, damage, writable):
    ids = _library_with_faces(tmp_path)
    index_file = tmp_path / "index" / "faiss.index"
    if damage == "vectors":  # same ids, one vector changed: a correct match would silently disappear
        vectors = np.eye(4, dtype=np.float32)[:3]
        vectors[1] = vectors[2]
        _replace_index_file(tmp_path, np.asarray(ids), vectors)
    elif damage == "id_map":  # ids no face has: every search used to crash with KeyError
        _replace_index_file(tmp_path, np.asarray(ids) + 100, np.eye(4, dtype=np.float32)[:3])
    elif damage == "bytes":
        index_file.write_bytes(b"\0" * 10)
    else:
        index_file.unlink()
    with Library(tmp_path, "m", 4, writable=writable) as reopened:
        assert reopened.index_problem and reopened.rebuilt_index
        assert sorted(reopened.index.ids().tolist()) == ids
        assert np.array_equal(reopened.index.vectors(np.asarray(ids)), np.eye(4, dtype=np.float32)[:3])
    if writable:  # the repaired index was saved: the next open trusts it
        with Library(tmp_path, "m", 4) as again:
            assert again.index_problem is None and not again.rebuilt_index


@pytest.mark.parametrize("state_has_id_sum", [True, False])
def test_a_reader_checks_the_id_map_against_the_saved_state_not_a_catalog_count(tmp_path, monkeypatch,
                                                                                  state_has_id_sum):
    """Index files saved at the catalog's revision: a reader compares their ids with the count and id sum saved
    beside them (counting a 1M-face catalog cost ~0.2 s of every one-off search); a state from before the id
    sum was saved is compared with the catalog. Either way a damaged id map is found."""
    ids = _library_with_faces(tmp_path)
    state_path = tmp_path / "index" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["id_sum"] == sum(ids)
    if not state_has_id_sum:
        state_path.write_text(json.dumps({key: value for key, value in state.items() if key != "id_sum"}))
    counted = []
    real = SqliteCatalog.fingerprint
    monkeypatch.setattr(SqliteCatalog, "fingerprint", lambda self, *a, **k: counted.append(1) or real(self, *a, **k))
    with Library(tmp_path, "m", 4) as reader:
        assert reader.index_problem is None and not reader.rebuilt_index
    assert bool(counted) is not state_has_id_sum
    _replace_index_file(tmp_path, np.asarray(ids) + 100, np.eye(4, dtype=np.float32)[:3])
    with Library(tmp_path, "m", 4) as reader:
        assert reader.index_problem and "face ids" in reader.index_problem and reader.rebuilt_index


def test_a_flipped_byte_in_the_index_file_fails_its_checksum(tmp_path):
    _library_with_faces(tmp_path)
    index_file = tmp_path / "index" / "faiss.index"
    data = bytearray(index_file.read_bytes())
    data[-40] ^= 0x01  # inside the id map: the file still loads
    index_file.write_bytes(bytes(data))
    with Library(tmp_path, "m", 4) as reader:
        assert reader.index_problems() and "SHA-256" in reader.index_problems()[0]
    with Library(tmp_path, "m", 4, writable=True) as writer:  # a writer (index, remove) checks and repairs
        assert writer.index_problem and writer.index_problems() == []


def _corrupt_embedding(root, face_id: int, factor: float = 1e13) -> None:
    with sqlite3.connect(root / "catalog.sqlite3") as db:
        blob = db.execute("SELECT embedding FROM faces WHERE id = ?", (face_id,)).fetchone()[0]
        vector = np.frombuffer(blob, np.float32) * np.float32(factor)
        db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (vector.tobytes(), face_id))


@pytest.mark.parametrize("factor", [1e13, float("nan"), 0.5])
def test_a_damaged_stored_embedding_is_refused_and_kept_out_of_the_index(tmp_path, factor):
    ids = _library_with_faces(tmp_path)
    _corrupt_embedding(tmp_path, ids[1], factor)
    with Library(tmp_path, "m", 4) as library:
        assert sorted(library.index.ids().tolist()) == [ids[0], ids[2]]
        assert library.skipped_face_ids == {ids[1]}
        with pytest.raises(DamagedLibraryError, match=f"face {ids[1]}.*check --repair") as raised:
            library.embeddings(ids)
        assert raised.value.reason == "damaged_library"


def test_a_face_removed_meanwhile_is_left_out_not_a_key_error(tmp_path):
    ids = _library_with_faces(tmp_path)
    with Library(tmp_path, "m", 4) as reader, Library(tmp_path, "m", 4, writable=True) as writer:
        writer.remove_faces([ids[0]])  # another process removes a face the reader's index still holds
        found, vectors = reader.embeddings(ids)
        assert found.tolist() == ids[1:] and vectors.shape == (2, 4)


# -- what a read-only open must not do ---------------------------------------------------------------


def test_a_reader_refuses_a_library_that_does_not_exist(tmp_path):
    with pytest.raises(NotFoundError, match="no facefind library at .*nowhere") as raised:
        Library(tmp_path / "nowhere", "m", 4)
    assert raised.value.reason == "no_library" and not (tmp_path / "nowhere").exists()
    with pytest.raises(NotFoundError):
        Library(tmp_path / "nowhere", "m", 4, writable=True, create=False)
    Library(tmp_path / "new", "m", 4, writable=True).close()  # `index` creates one


def test_a_reader_writes_nothing(tmp_path, monkeypatch):
    """Opening for a search or stats used to write (schema version): on a full disk, or behind a busy
    writer, even `stats` then failed."""
    _library_with_faces(tmp_path)
    other = sqlite3.connect(tmp_path / "catalog.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a writer mid-transaction: a reader that writes would have to wait
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda path, **options: connect(path, **{**options, "timeout": 0}))
    with Library(tmp_path, "m", 4) as reader:
        assert len(reader.index) == 3 and reader.catalog.stats()["faces"] == 3
    other.execute("ROLLBACK")
    other.close()


def test_a_damaged_catalog_file_is_a_clear_error(tmp_path):
    _library_with_faces(tmp_path)
    (tmp_path / "catalog.sqlite3").write_bytes(b"this is not a database" * 100)
    for name in ("catalog.sqlite3-wal", "catalog.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(DamagedLibraryError, match="catalog .* is damaged.*check --repair"):
        Library(tmp_path, "m", 4)


# -- crash leftovers -----------------------------------------------------------------------------------


def test_a_writer_cleans_up_what_a_killed_writer_left(tmp_path):
    ids = _library_with_faces(tmp_path)
    with Library(tmp_path, "m", 4, writable=True) as library:
        library.catalog.start_ingest(["/photos"])  # then kill -9: the log says running forever
        library.write_thumbnails({"ab/never-committed.jpg": b"crop"})
        library._uncommitted_thumbnails.clear()  # as if the process died here (close() would delete it)
    (tmp_path / "index" / f"faiss.index.tmp{12345}").write_bytes(b"half an index")
    (tmp_path / "thumbs" / "ab" / "kept.jpg").write_bytes(b"crop")
    with sqlite3.connect(tmp_path / "catalog.sqlite3") as db:
        db.execute("UPDATE faces SET thumbnail = 'ab/kept.jpg' WHERE id = ?", (ids[0],))
    with Library(tmp_path, "m", 4) as reader:  # a reader changes nothing
        assert reader.catalog.stats()["last_ingest"]["status"] == "running"
    with Library(tmp_path, "m", 4, writable=True) as writer:
        assert writer.died_ingests == 1
        assert writer.catalog.stats()["last_ingest"]["status"] == "died"
        assert writer.orphan_files() == []
    assert not (tmp_path / "index" / "faiss.index.tmp12345").exists()
    assert not (tmp_path / "thumbs" / "ab" / "never-committed.jpg").exists()
    assert (tmp_path / "thumbs" / "ab" / "kept.jpg").exists()


def test_a_failed_index_save_leaves_no_temporary_and_the_old_index(tmp_path, monkeypatch):
    _library_with_faces(tmp_path)
    before = (tmp_path / "index" / "faiss.index").read_bytes()

    def full_disk(index, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("Error in FileIOWriter: write error: No space left on device")

    with Library(tmp_path, "m", 4, writable=True) as library:
        _add_faces(library, "/b.jpg", 1)
        monkeypatch.setattr(faiss, "write_index", full_disk)
        with pytest.raises(DiskFullError, match="disk is full"):
            library.save_index()
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["faiss.index", "state.json"]
    assert (tmp_path / "index" / "faiss.index").read_bytes() == before
    monkeypatch.undo()
    with Library(tmp_path, "m", 4) as reader:  # the catalog had the commit: the index is rebuilt with it
        assert len(reader.index) == 4


# -- thumbnails are deleted only when nothing refers to them -------------------------------------------


def _commit(library: Library, path: str, thumbnails: list[str], seed: int = 0):
    vectors = np.roll(np.eye(4, dtype=np.float32), seed, axis=1)
    faces = [NewFace(i, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, {"verdict": "good"}, "m", vectors[i], name)
             for i, name in enumerate(thumbnails)]
    library.write_thumbnails({name: b"crop" for name in thumbnails})
    return library.commit_outcomes([MediaOutcome(path=path, status="indexed", faces=faces)])


def test_byte_identical_files_keep_their_shared_thumbnails_until_both_are_removed(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        _commit(library, "/a.jpg", ["ab/same_0.jpg"])
        _commit(library, "/copy-of-a.jpg", ["ab/same_0.jpg"])
        library.remove_media("/a.jpg")
        assert (tmp_path / "thumbs" / "ab" / "same_0.jpg").exists()  # the copy still shows it
        library.remove_media("/copy-of-a.jpg")
        assert not (tmp_path / "thumbs" / "ab" / "same_0.jpg").exists()


def test_reindexing_a_changed_file_deletes_its_old_crops(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        _commit(library, "/a.jpg", ["aa/old_0.jpg", "aa/old_1.jpg"])
        result = _commit(library, "/a.jpg", ["bb/new_0.jpg"], seed=1)
        assert sorted(result.released_thumbnails) == ["aa/old_0.jpg", "aa/old_1.jpg"]
    assert sorted(p.name for p in (tmp_path / "thumbs").rglob("*.jpg")) == ["new_0.jpg"]


def test_a_removal_interrupted_before_the_unlink_is_finished_by_the_next_writer(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        _commit(library, "/a.jpg", ["ab/a_0.jpg"])
        library.catalog.remove_media("/a.jpg")  # committed; then the process dies before deleting files
    assert (tmp_path / "thumbs" / "ab" / "a_0.jpg").exists()
    with Library(tmp_path, "m", 4, writable=True) as library:
        assert library.catalog.pending_deletions() == []
    assert not (tmp_path / "thumbs" / "ab" / "a_0.jpg").exists()


# -- a full disk: a real one (a 2 MB tmpfs in a private mount namespace) -------------------------------

_DISK_FULL = '''
import json, os, sys
from pathlib import Path
import numpy as np
from facefind.catalog import MediaOutcome, NewFace
from facefind.catalog.sqlite import SqliteCatalog
from facefind.errors import DiskFullError
from facefind.library import Library

disk = Path(sys.argv[1])
root = disk / "library"

def outcome(path, seed, faces=2):
    vectors = np.random.default_rng(seed).normal(size=(faces, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return MediaOutcome(path=path, status="indexed", faces=[
        NewFace(i, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, {"verdict": "good"}, "m", vectors[i], None) for i in range(faces)])

result = {}
with Library(root, "m", 512, writable=True) as library:
    library.commit_outcomes([outcome(f"/committed{i}.jpg", i) for i in range(5)])
    library.save_index()
    with open(disk / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(bytes(65536))
        except OSError:
            pass
    errors = []
    for attempt in (lambda: library.write_thumbnails({"ab/x.jpg": os.urandom(200_000)}),
                    lambda: library.commit_outcomes([outcome(f"/more{i}.jpg", 100 + i, 4) for i in range(100)]),
                    lambda: library.save_index()):
        try:
            attempt()
            errors.append(None)
        except DiskFullError as error:
            errors.append(error.reason)
    result["errors"] = errors
result["index_files"] = sorted(p.name for p in (root / "index").iterdir())
result["thumbnails"] = sorted(str(p) for p in (root / "thumbs").rglob("*") if p.is_file())
with Library(root, "m", 512) as reader:  # the disk is still full
    result["faces"], result["index"] = reader.catalog.stats()["faces"], len(reader.index)
print(json.dumps(result))
'''


def test_a_full_disk_is_a_clear_error_loses_nothing_and_reads_still_work(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unprivileged user and mount namespaces (unshare -rm) to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "disk_full.py"
    script.write_text(_DISK_FULL)
    run = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=2m none "$1" && exec "$2" "$3" "$1"', "sh",
         str(disk), sys.executable, str(script)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["errors"] == ["disk_full", "disk_full", "disk_full"]  # thumbnail, catalog commit, index save
    assert result["index_files"] == ["faiss.index", "state.json"]  # no temporaries
    assert result["thumbnails"] == []  # crops of the batch that never committed are gone
    assert result["faces"] == result["index"] == 10  # what was committed before is all there


# -- the index kind follows the library's size ---------------------------------------------------------

from facefind.index import FaissAnnIndex, IndexPolicy  # noqa: E402
from facefind.search import _candidates  # noqa: E402

DIM = 64
SMALL_THRESHOLD = IndexPolicy(ann_threshold=300)


def _people(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(plain, masked template) unit vectors of ``count`` faces, five per person; the masked templates
    share a "mask" direction, so strangers' masked templates look alike (as real ones do)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(count // 5 + 1, DIM))
    plain = np.repeat(centres, 5, axis=0)[:count] + 0.5 * rng.normal(size=(count, DIM))
    masked = plain + 1.5 * np.eye(DIM)[0] * np.linalg.norm(plain, axis=1, keepdims=True) + 0.5 * rng.normal(size=(count, DIM))
    return tuple((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for v in (plain, masked))


def _add_people(library: Library, path: str, count: int, seed: int) -> list[int]:
    plain, masked = _people(count, seed)
    faces = [NewFace(i, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, {"verdict": "good"}, "m", plain[i], None, masked_embedding=masked[i])
             for i in range(count)]
    return library.commit_outcomes([MediaOutcome(path=path, status="indexed", faces=faces)]).added_ids


def _agrees_with_exact_search(library: Library, queries: np.ndarray) -> float:
    """recall@10 of the library's index against scoring every stored embedding."""
    ids = np.concatenate([i for i, _ in library.catalog.iter_embeddings("m", dim=DIM)])
    vectors = np.concatenate([v for _, v in library.catalog.iter_embeddings("m", dim=DIM)])
    _, found = library.index.search(queries, 10)
    expected = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :10]]
    return float(np.mean([len(set(e) & set(f)) / 10 for e, f in zip(expected, found)]))


def test_the_index_switches_to_ann_at_the_threshold_and_agrees_with_exact_search(tmp_path):
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as library:
        _add_people(library, "/a.jpg", 299, seed=0)
        assert isinstance(library.index, FaissFlatIndex)
        _add_people(library, "/b.jpg", 200, seed=1)  # crosses 300: switched once, by this commit
        assert isinstance(library.index, FaissAnnIndex) and library.index.trained_on == 499
        library.save_index()
    state = json.loads((tmp_path / "index" / "state.json").read_text())
    assert state["index"]["kind"] == "pq-refine" and state["index"]["trained_on"] == 499
    assert sorted(state["sha256"]) == ["faiss-refine.index", "faiss.index"]
    with Library(tmp_path, "m", DIM, index_policy=SMALL_THRESHOLD) as reader:  # read-only: memory-mapped
        assert isinstance(reader.index, FaissAnnIndex) and not reader.rebuilt_index
        assert _agrees_with_exact_search(reader, _people(60, seed=0)[0]) >= 0.95


def test_adds_and_removals_keep_agreeing_and_reopen(tmp_path):
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as library:
        first = _add_people(library, "/a.jpg", 600, seed=0)
        library.remove_faces(first[::4])
        _add_people(library, "/b.jpg", 300, seed=2)
        library.remove_media("/b.jpg")
        _add_people(library, "/c.jpg", 300, seed=3)
        queries = np.concatenate([_people(40, seed=0)[0], _people(40, seed=3)[0]])
        assert len(library.index) == 750 and _agrees_with_exact_search(library, queries) >= 0.95
        _, ids = library.index.search(_people(600, seed=0)[0][::4], 10)
        assert not np.isin(ids, first[::4]).any()
        library.save_index()
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as reopened:
        assert not reopened.rebuilt_index and reopened.index_problem is None
        assert _agrees_with_exact_search(reopened, queries) >= 0.95


def test_the_codebook_is_trained_again_when_the_library_has_grown_fourfold(tmp_path):
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as library:
        _add_people(library, "/a.jpg", 300, seed=0)
        _add_people(library, "/b.jpg", 900, seed=1)
        assert library.index.trained_on == 300  # no rebuild per batch
        library.save_index()
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as reopened:
        assert reopened.rebuilt_index and reopened.index.trained_on == 1200
    with Library(tmp_path, "m", DIM, index_policy=SMALL_THRESHOLD) as reader:
        assert not reader.rebuilt_index and reader.index.trained_on == 1200


def test_a_large_library_is_rebuilt_from_the_catalog_as_ann(tmp_path):
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as library:
        _add_people(library, "/a.jpg", 500, seed=0)  # committed, index never saved: a crash
    with Library(tmp_path, "m", DIM, index_policy=SMALL_THRESHOLD) as reader:
        assert reader.rebuilt_index and isinstance(reader.index, FaissAnnIndex) and len(reader.index) == 500
        assert _agrees_with_exact_search(reader, _people(60, seed=0)[0]) >= 0.95


def test_a_library_saved_before_the_ann_index_reopens_without_a_rebuild(tmp_path):
    """The layout facefind wrote before: a flat faiss.index, a second flat index of masked templates,
    and a state.json without an "index" entry."""
    with Library(tmp_path, "m", DIM, writable=True) as library:
        _add_people(library, "/a.jpg", 20, seed=0)
        library.save_index()
    index_dir = tmp_path / "index"
    masked = FaissFlatIndex(DIM)
    masked.add(np.arange(1, 21), _people(20, seed=0)[1])
    masked.save(index_dir / "faiss-masked.index")
    state = json.loads((index_dir / "state.json").read_text())
    del state["index"]
    state.update(masked_count=20, sha256={**state["sha256"], "faiss-masked.index": "0" * 64})
    (index_dir / "state.json").write_text(json.dumps(state))
    with Library(tmp_path, "m", DIM) as reader:
        assert not reader.rebuilt_index and len(reader.index) == 20
    with Library(tmp_path, "m", DIM, writable=True) as writer:
        assert not writer.rebuilt_index and writer.index_problem is None
        _add_people(writer, "/b.jpg", 5, seed=1)
        writer.save_index()
    assert sorted(p.name for p in index_dir.iterdir()) == ["faiss.index", "state.json"]


@pytest.mark.parametrize("policy", [IndexPolicy(), SMALL_THRESHOLD], ids=["flat", "ann"])
def test_covered_probes_agree_with_scoring_every_face(tmp_path, policy):
    """A covered probe re-scores the plain index's candidates with the masked templates: its top
    matches are those of fused scoring over every face, though only the plain index exists."""
    with Library(tmp_path, "m", DIM, writable=True, index_policy=policy) as library:
        _add_people(library, "/a.jpg", 3000, seed=0)
        plain, masked = _people(3000, seed=0)
        probes = _people(3000, seed=0)[1][::150]  # covered photos of 20 people in the library
        for probe in probes:
            found, _ = _candidates(library, probe, 2, None, "mean_of_both")
            fused = (plain @ probe + masked @ probe) / 2
            expected = np.argsort(-fused)[:8] + 1  # face ids count from 1 in commit order
            assert [face_id for face_id, _ in found][:3] == expected[:3].tolist()


def test_a_service_library_builds_the_new_index_in_the_background_while_the_old_one_serves(tmp_path, monkeypatch):
    """Crossing the threshold in a service (build_in_background) trains the ANN index in a thread: the commit
    returns at once, the flat index keeps answering, and what is committed or removed meanwhile is in the new one."""
    import threading

    training, release = threading.Event(), threading.Event()
    train = FaissAnnIndex.trained.__func__

    def held_training(cls, *args, **kwargs):
        training.set()
        assert release.wait(60)
        return train(cls, *args, **kwargs)

    monkeypatch.setattr(FaissAnnIndex, "trained", classmethod(held_training))
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as library:
        library.build_in_background = True
        first = _add_people(library, "/a.jpg", 299, seed=0)
        _add_people(library, "/b.jpg", 200, seed=1)  # crosses 300: the build starts, this commit does not wait
        assert training.wait(60) and isinstance(library.index, FaissFlatIndex)
        _add_people(library, "/c.jpg", 100, seed=2)  # committed during the build
        library.remove_faces(first[:50])
        with library.reading():
            assert len(library.index) == 549  # the old index serves, up to date
        release.set()
        library.wait_for_index_build()
        assert isinstance(library.index, FaissAnnIndex) and library.index.trained_on == 499
        catalog_ids = np.concatenate([ids for ids, _ in library.catalog.iter_embeddings("m", dim=DIM)])
        assert sorted(library.index.ids()) == sorted(catalog_ids) and len(catalog_ids) == 549
        queries = np.concatenate([_people(60, seed=1)[0], _people(40, seed=2)[0]])
        assert _agrees_with_exact_search(library, queries) >= 0.95
    with Library(tmp_path, "m", DIM, writable=True, index_policy=SMALL_THRESHOLD) as reopened:  # saved as swapped
        assert not reopened.rebuilt_index and isinstance(reopened.index, FaissAnnIndex)
