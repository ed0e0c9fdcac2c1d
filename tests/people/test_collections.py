"""People over HTTP for users limited to collections: nobody sees or counts a face outside their collections,
through people, a person's faces, co-appearances, the graph export, search matches' person counts or stats.

Two collections hold one player: case-a his team photo twice (with his team-mates), case-b his portrait and
another group photo twice (people of its own). amy reads case-a, bob case-b;
root (admin) reads everything and gives each test its expected answer, filtered to the user's folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from facefind.samples import gallery_samples, probe_sample
from facefind.service import ServiceSettings
from tests.service.conftest import PASSWORDS, PURPOSE, SETUP, problem_of, serve

USERS = {"amy": ["case-a"], "bob": ["case-b"], "root": ["case-a", "case-b"]}


def write_collections(root: Path) -> dict[str, Path]:
    """case-a: the team photo and a re-encoded copy; case-b: the portrait, another group photo and its copy."""
    folders = {"case-a": root / "case_a", "case-b": root / "case_b"}
    for folder in folders.values():
        folder.mkdir()
    team = next(sample for sample in gallery_samples() if sample.name == "players.jpg")
    shutil.copy(team, folders["case-a"] / "players.jpg")
    Image.open(team).convert("RGB").save(folders["case-a"] / "players_again.jpg", quality=90)
    shutil.copy(probe_sample(), folders["case-b"] / "yaoming.jpg")
    other = next(sample for sample in gallery_samples() if sample.name == "gdp.jpg")
    shutil.copy(other, folders["case-b"] / "gdp.jpg")
    Image.open(other).convert("RGB").save(folders["case-b"] / "gdp_again.jpg", quality=90)
    return folders


@pytest.fixture(scope="module")
def served(tmp_path_factory, pipeline):
    root = tmp_path_factory.mktemp("people-collections")
    folders = write_collections(root)
    settings = ServiceSettings(library=root / "library", allow_roots=(root,), index_workers=1)
    with serve(settings, pipeline) as server:
        facefind = server.facefind
        assert facefind.index(list(folders.values()), workers=1, actor=SETUP).failed == 0
        for name, folder in folders.items():
            facefind.set_collection(name, [folder], actor=SETUP)
        facefind.people_build(actor=SETUP)
        server.folders = folders
        add_limited_investigators(server)
        yield server


def add_limited_investigators(server) -> None:
    """amy and bob: investigators limited to their collections (USERS), with API keys in ``server.user_keys``."""
    facefind, server.user_keys = server.facefind, {"root": server.keys["root"]}
    for user in ("amy", "bob"):
        facefind.accounts.add_user(user, "investigator", PASSWORDS["root"], SETUP)
        for collection in USERS[user]:
            facefind.grant_collection(user, collection, actor=SETUP)
        server.user_keys[user] = facefind.accounts.create_key(user, ["search", "index"], None, SETUP)[0]


def client_of(server, user: str) -> httpx.Client:
    return server.client(key=server.user_keys[user])


def readable(server, user: str, path: str) -> bool:
    return any(path.startswith(str(server.folders[name]) + "/") for name in USERS[user])


@pytest.fixture(scope="module")
def everyone(served) -> dict[int, dict]:
    """Every person as the admin sees them: id -> detail (every face and its file)."""
    with client_of(served, "root") as root:
        return {p["person_id"]: root.get(f"/api/v1/people/{p['person_id']}").json()
                for p in root.get("/api/v1/people", params={"hidden": True}).json()}


def expected_faces(served, everyone, user: str) -> dict[int, list[dict]]:
    """person id -> the faces ``user`` may see; people without one are left out."""
    faces = {pid: [f for f in person["face_list"] if readable(served, user, f["source"]["path"])]
             for pid, person in everyone.items()}
    return {pid: found for pid, found in faces.items() if found}


def test_the_library_holds_what_the_tests_need(served, everyone):
    """The player spans both collections; case-a has people of its own, and so has case-b."""
    spans = [pid for pid in everyone if all(expected_faces(served, everyone, u).get(pid) for u in ("amy", "bob"))]
    assert len(spans) == 1
    only_a = set(expected_faces(served, everyone, "amy")) - set(expected_faces(served, everyone, "bob"))
    only_b = set(expected_faces(served, everyone, "bob")) - set(expected_faces(served, everyone, "amy"))
    assert only_a and only_b


@pytest.mark.parametrize("user", sorted(USERS))
def test_the_people_list_counts_only_readable_faces(served, everyone, user):
    expected = expected_faces(served, everyone, user)
    with client_of(served, user) as client:
        listed = {p["person_id"]: p for p in client.get("/api/v1/people", params={"hidden": True}).json()}
    assert set(listed) == set(expected)
    for pid, person in listed.items():
        photos = {f["source"]["path"] for f in expected[pid] if f["video"] is None}
        assert (person["faces"], person["photos"], person["videos"]) == (len(expected[pid]), len(photos), 0)
        assert person["nearest"] is None or person["nearest"]["person_id"] in listed, "no one from outside"


@pytest.mark.parametrize("user", sorted(USERS))
def test_a_persons_page_shows_only_readable_faces_and_others_are_not_found(served, everyone, user):
    expected = expected_faces(served, everyone, user)
    with client_of(served, user) as client:
        for pid in everyone:
            response = client.get(f"/api/v1/people/{pid}")
            if pid not in expected:
                assert response.status_code == 404 and problem_of(response)["reason"] == "not_found"
                continue
            shown = response.json()
            assert sorted(f["face"]["face_id"] for f in shown["face_list"]) == sorted(
                f["face"]["face_id"] for f in expected[pid])
            assert shown["faces"] == len(expected[pid])
            if shown["thumbnail"]:
                thumb = Path(shown["thumbnail"]).relative_to(served.facefind.library_path / "thumbs")
                assert client.get(f"/api/v1/thumbnails/{thumb.as_posix()}").status_code == 200


@pytest.mark.parametrize("user", sorted(USERS))
def test_co_appearances_hold_only_readable_photos(served, everyone, user):
    expected = expected_faces(served, everyone, user)
    with client_of(served, user) as client, client_of(served, "root") as root:
        for pid in everyone:
            response = client.get(f"/api/v1/people/{pid}/with")
            if pid not in expected:
                assert response.status_code == 404
                continue
            wanted = {c["person_id"]: sorted(p for p in c["photos"] if readable(served, user, p))
                      for c in root.get(f"/api/v1/people/{pid}/with").json()}
            got = {c["person_id"]: sorted(c["photos"]) for c in response.json()}
            assert got == {other: photos for other, photos in wanted.items() if photos}
    if user == "bob":  # alone in his portrait: bob knows of no team-mates
        spans = next(p for p in expected if expected_faces(served, everyone, "amy").get(p))
        with client_of(served, user) as client:
            assert client.get(f"/api/v1/people/{spans}/with").json() == []


@pytest.mark.parametrize("user", sorted(USERS))
def test_the_graph_export_holds_only_readable_people_and_counts(served, everyone, user):
    expected = {pid: faces for pid, faces in expected_faces(served, everyone, user).items()
                if not everyone[pid]["hidden"]}
    with client_of(served, user) as client:
        graph = client.get("/api/v1/people/export", params={"format": "json"}).json()
        graphml = client.get("/api/v1/people/export", params={"format": "graphml"}).text
    assert {node["id"]: node["faces"] for node in graph["nodes"]} == {p: len(f) for p, f in expected.items()}
    assert all(link["source"] in expected and link["target"] in expected for link in graph["links"])
    assert graphml.count("<node ") == len(expected)


@pytest.mark.parametrize("user", sorted(USERS))
def test_a_matchs_person_counts_only_readable_photos(served, everyone, user):
    expected = expected_faces(served, everyone, user)
    with client_of(served, user) as client:
        result = client.post("/api/v1/search", files={"file": ("probe.jpg", probe_sample().read_bytes())},
                             data={**PURPOSE, "show_all": "true", "top_k": "50"}).json()
    with_person = [m for m in result["matches"] if m.get("person")]
    assert with_person
    for match in with_person:
        pid = match["person"]["person_id"]
        photos = {f["source"]["path"] for f in expected[pid] if f["video"] is None}
        assert (match["person"]["photos"], match["person"]["videos"]) == (len(photos), 0)


@pytest.mark.parametrize("user", sorted(USERS))
def test_stats_count_only_readable_files_and_faces(served, user):
    with served.facefind._library() as library:
        faces = sum(len(library.catalog.face_ids_under(str(served.folders[name]))) for name in USERS[user])
    files = sum(len(list(served.folders[name].iterdir())) for name in USERS[user])
    with client_of(served, user) as client:
        stats = client.get("/api/v1/stats").json()
    assert (stats["files"], stats["faces"], stats["index_size"]) == (files, faces, faces)
    assert sum(stats["files_by_status"].values()) == files and sum(stats["faces_by_quality"].values()) == faces


def test_nobody_changes_people_through_a_face_outside_their_collections(served, everyone):
    """bob may not move a case-a face into his person, nor build people over every collection."""
    bobs = expected_faces(served, everyone, "bob")
    spans = next(p for p in bobs if expected_faces(served, everyone, "amy").get(p))
    outside = next(f["face"]["face_id"] for f in everyone[spans]["face_list"]
                   if not readable(served, "bob", f["source"]["path"]))
    with client_of(served, "bob") as bob:
        for path, body in ((f"/api/v1/people/{spans}/faces", {"face_id": outside}),
                           (f"/api/v1/people/{spans}/not", {"face_id": outside}),
                           (f"/api/v1/people/{spans}/split", {"face_ids": [outside]})):
            refused = bob.post(path, json=body)
            assert refused.status_code == 404 and problem_of(refused)["reason"] == "not_found", path
        built = bob.post("/api/v1/people/build", json={})
        assert built.status_code == 403 and problem_of(built)["reason"] == "forbidden"
    with client_of(served, "root") as root:
        assert root.get(f"/api/v1/people/{spans}").json()["face_list"] == everyone[spans]["face_list"]
