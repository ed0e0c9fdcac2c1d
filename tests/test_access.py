"""Who may do what: roles and key scopes checked at the library door, a purpose stated for every search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facefind.access import ACCESS_FILE, AccessConfig, Actor, Purpose, os_user
from facefind.errors import FaceFindError
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def _actor(role: str, scopes: set[str] | None = None) -> Actor:
    return Actor("someone", role, frozenset(scopes) if scopes is not None else None)


# (operation, call) pairs that are refused before any work, so an empty library is enough.
OPERATIONS = {
    "search": lambda ff, actor: ff.search(probe_sample(), purpose=PURPOSE, actor=actor),
    "verify": lambda ff, actor: ff.verify(probe_sample(), probe_sample(), purpose=PURPOSE, actor=actor),
    "index": lambda ff, actor: ff.index([], actor=actor),
    "stats": lambda ff, actor: ff.stats(actor=actor),
    "remove": lambda ff, actor: ff.remove(face_ids=[1], actor=actor),
    "export_evidence": lambda ff, actor: ff.export_evidence("1-1", Path("/nonexistent/page.html"), actor=actor),
    "audit_verify": lambda ff, actor: ff.audit_verify(actor=actor),
    "search_log": lambda ff, actor: ff.search_log(actor=actor),
}

# (operation, actor, allowed?): the permission table as seen through the API.
RULES = [
    ("search", _actor("viewer"), False),
    ("search", _actor("auditor"), False),
    ("search", _actor("investigator", {"index"}), False),  # a key without the search scope
    ("verify", _actor("viewer"), False),
    ("index", _actor("viewer"), False),
    ("index", _actor("investigator", {"search"}), False),
    ("stats", _actor("auditor"), False),
    ("stats", _actor("viewer"), True),
    ("remove", _actor("investigator"), False),
    ("remove", _actor("admin", {"search", "index"}), False),  # an admin's key is no broader than its scopes
    ("export_evidence", _actor("viewer"), False),
    ("audit_verify", _actor("investigator"), False),
    ("audit_verify", _actor("auditor"), True),
    ("audit_verify", _actor("auditor", {"audit"}), True),
    ("search_log", _actor("viewer"), True),
    ("search_log", _actor("auditor"), False),
]


@pytest.mark.parametrize("operation, actor, allowed", RULES,
                         ids=[f"{op}-{a.role}-{sorted(a.key_scopes or [])}" for op, a, _ in RULES])
def test_each_role_and_scope_may_do_only_its_operations(operation, actor, allowed, facefind, tmp_path):
    (tmp_path / "empty").mkdir()
    facefind.index([tmp_path / "empty"])  # a library, made by its (admin) creator
    before = list(facefind.audit_log.entries())
    if allowed:
        OPERATIONS[operation](facefind, actor)
    else:
        with pytest.raises(FaceFindError) as refused:
            OPERATIONS[operation](facefind, actor)
        assert refused.value.reason == "forbidden" and actor.role in str(refused.value)
        denied = list(facefind.audit_log.entries())[len(before):]  # a refusal is on the record too
        assert [(e["action"], e["actor"]) for e in denied] == [("denied", "someone")]


def test_the_local_user_is_admin_of_the_library_they_create(facefind, tmp_path):
    (tmp_path / "empty").mkdir()
    facefind.index([tmp_path / "empty"])
    config = json.loads((facefind.library_path / ACCESS_FILE).read_text())
    assert config["local_roles"] == {os_user(): "admin"}
    assert facefind.local_actor() == Actor(os_user(), "admin")


def test_a_configured_local_role_binds_the_command_line(facefind, tmp_path):
    (tmp_path / "empty").mkdir()
    facefind.index([tmp_path / "empty"])
    AccessConfig(local_roles={os_user(): "auditor"}).save(facefind.library_path)
    with pytest.raises(FaceFindError, match="may not search") as refused:
        facefind.search(probe_sample(), purpose=PURPOSE)  # no actor given: the OS user, now an auditor
    assert refused.value.reason == "forbidden"
    assert facefind.audit_verify().intact
    AccessConfig(local_roles={"somebody-else": "admin"}).save(facefind.library_path)
    assert facefind.local_actor().role == "viewer"  # roles configured, this user not listed: view only


def test_an_unknown_role_or_scope_is_refused():
    with pytest.raises(FaceFindError, match="unknown role"):
        Actor("x", "superuser")
    with pytest.raises(FaceFindError, match="unknown key scope"):
        Actor("x", "admin", frozenset({"everything"}))


@pytest.mark.parametrize("purpose, message", [
    (None, "states its purpose"),
    (Purpose("", "a reason that is long enough"), "case reference"),
    (Purpose("CASE-7", "short"), "at least 10 characters"),
    (Purpose("CASE-7", "          padded"), "at least 10 characters"),
])
def test_search_and_verify_need_a_stated_purpose(purpose, message, facefind):
    for call in (lambda: facefind.search(probe_sample(), purpose=purpose),
                 lambda: facefind.verify(probe_sample(), probe_sample(), purpose=purpose)):
        with pytest.raises(FaceFindError, match=message) as refused:
            call()
        assert refused.value.reason == "purpose_required"
    assert not facefind.audit_log.path.exists()  # nothing ran, nothing to record


def test_the_shortest_reason_is_configurable(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    AccessConfig(local_roles={os_user(): "admin"}, min_reason_length=45).save(facefind.library_path)
    with pytest.raises(FaceFindError, match="at least 45 characters"):
        facefind.search(probe_sample(), purpose=PURPOSE)
    stated = Purpose("CASE-7", "identify the person in the CCTV still of 3 May")
    assert facefind.search(probe_sample(), purpose=stated).matches


def test_access_changes_are_an_admins_audited_and_keep_an_admin(facefind, tmp_path):
    (tmp_path / "empty").mkdir()
    facefind.index([tmp_path / "empty"])
    changed = facefind.change_access("bob", "investigator", min_reason_length=20)
    assert changed.local_roles == {os_user(): "admin", "bob": "investigator"}
    assert facefind.access_config() == changed
    entry = list(facefind.audit_log.entries())[-1]
    assert entry["action"] == "settings" and json.loads(entry["details"])["min_reason_length"]["after"] == 20
    with pytest.raises(FaceFindError, match="no local admin"):
        facefind.change_access(os_user(), "viewer")
    with pytest.raises(FaceFindError, match="unknown role"):
        facefind.change_access("bob", "boss")
    with pytest.raises(FaceFindError) as refused:
        facefind.change_access("bob", "admin", actor=Actor("bob", "investigator"))
    assert refused.value.reason == "forbidden"
    assert facefind.access_config() == changed


# -- collections --

@pytest.mark.parametrize(("collections", "actor", "readable"), [
    ({}, Actor("amy", "investigator", collections=frozenset({"a"})), None),  # none defined: one implicit collection
    ({"a": ["/p/a"], "b": ["/p/b"]}, Actor("amy", "investigator", collections=frozenset({"a"})), ["/p/a"]),
    ({"a": ["/p/a"], "b": ["/p/b", "/q"]}, Actor("amy", "investigator", collections=frozenset({"a", "b"})),
     ["/p/a", "/p/b", "/q"]),
    ({"a": ["/p/a"]}, Actor("nick", "investigator", collections=frozenset()), []),
    ({"a": ["/p/a"]}, Actor("nick", "investigator", collections=frozenset({"gone"})), []),
    ({"a": ["/p/a"]}, Actor("root", "admin"), None),  # an admin (and the command line) reads everything
])
def test_an_actor_reads_the_roots_of_their_granted_collections(collections, actor, readable):
    assert AccessConfig(collections=collections).readable_roots(actor) == readable


def test_collections_live_in_access_json_and_other_access_changes_keep_them(facefind, tmp_path):
    (tmp_path / "a").mkdir()
    facefind.set_collection("case-a", [tmp_path / "a", tmp_path / "a" / ".." / "a"])
    assert facefind.collections() == {"case-a": [str(tmp_path / "a")]}
    facefind.change_access("bob", "investigator")
    assert AccessConfig.load(facefind.library_path).collections == {"case-a": [str(tmp_path / "a")]}
    actions = [entry["action"] for entry in facefind.audit_log.entries()]
    assert actions[-2:] == ["collection_set", "settings"]
    with pytest.raises(FaceFindError, match="bad collection name"):
        facefind.set_collection("../x", [tmp_path])
    with pytest.raises(FaceFindError) as refused:
        facefind.set_collection("case-b", [tmp_path], actor=Actor("bob", "investigator"))
    assert refused.value.reason == "forbidden"
    facefind.set_collection("case-a", None)
    assert facefind.collections() == {}


def test_the_index_is_requeried_wider_until_a_small_allowed_set_has_its_candidates(facefind, photo_folder):
    """The ANN/flat index ranks the whole library: an allowed face ranked last must still come back."""
    from facefind.search import _index_candidates, probe_faces

    facefind.index([photo_folder], workers=1)
    probe = probe_faces(facefind.pipeline, probe_sample().read_bytes(), "probe", facefind.max_pixels)[0].embedding
    with facefind.open_library() as library:
        ids, vectors = library.embeddings(sorted(int(i) for i in library.index.ids()))
        worst = int(ids[(vectors @ probe).argmin()])
        assert len(library.index) > 8
        assert worst not in library.index.search(probe[None, :], 4)[1][0], "not among the first asked"
        assert _index_candidates(library, probe, 4, {worst}) == [worst]
        assert len(_index_candidates(library, probe, 4, None)) == 4


def test_a_large_restricted_gallery_searched_through_the_index_finds_what_exact_scoring_finds(
        facefind, photo_folder, monkeypatch):
    import facefind.search as search

    facefind.index([photo_folder], workers=1)
    facefind.set_collection("team", [photo_folder / "players.jpg"])
    amy = Actor("amy", "investigator", collections=frozenset({"team"}))
    exact = facefind.search(probe_sample(), top_k=5, show_all=True, purpose=PURPOSE, actor=amy)
    monkeypatch.setattr(search, "EXACT_SCORING_MAX", 0)
    through_index = facefind.search(probe_sample(), top_k=5, show_all=True, purpose=PURPOSE, actor=amy)
    assert through_index.gallery_size == exact.gallery_size < facefind.stats()["index_size"]
    assert [m.face.face_id for m in through_index.matches] == [m.face.face_id for m in exact.matches]
    assert all(m.source.path.endswith("players.jpg") for m in exact.matches)


def test_indexing_outside_ones_collections_is_refused(facefind, photo_folder, tmp_path):
    facefind.set_collection("photos", [photo_folder])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    amy = Actor("amy", "investigator", collections=frozenset({"photos"}))
    with pytest.raises(FaceFindError, match="outside the collections amy may use") as refused:
        facefind.index([elsewhere], actor=amy)
    assert refused.value.reason == "forbidden_path"
    assert facefind.index([photo_folder], workers=1, actor=amy).failed == 0
