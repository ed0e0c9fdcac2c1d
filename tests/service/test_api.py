"""The HTTP API over real HTTP: uvicorn on a loopback port, httpx clients, the named_people data."""

from __future__ import annotations

import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from facefind.samples import gallery_samples, probe_sample
from facefind.service import ServiceSettings
from tests.service.conftest import PURPOSE, person_of, problem_of, serve

pytestmark = pytest.mark.shared_data

MAX_UPLOAD = 1_000_000
MAX_PIXELS = 5_000_000
PROBE_PEOPLE = {
    "alex_lacamoire1.jpg": {"alex_lacamoire"},
    "johnsnow_test1.jpg": {"kit_harington"},
    "obama1.jpg": {"obama"},
    "kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
    "obama_and_biden.jpg": {"obama", "biden"},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service")
    incoming = root / "incoming"
    incoming.mkdir()
    (incoming / "escape").symlink_to("/etc")  # a link inside an allowed root that leads out of it
    return {"library": root / "library", "incoming": incoming, "people": data_dir / "named_people",
            "crowds": data_dir / "group_photos" / "crowds"}


@pytest.fixture(scope="module")
def server(folders, pipeline):
    settings = ServiceSettings(
        library=folders["library"], allow_roots=(folders["people"], folders["incoming"], folders["crowds"]),
        max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, index_workers=1,
    )
    with serve(settings, pipeline) as served:
        with served.client() as client:
            job = client.post("/api/v1/jobs", json={"paths": [str(folders["people"] / "train")]})
            assert job.status_code == 202, job.text
            assert served.wait_for_job(client, job.json()["job_id"])["status"] == "finished"
        yield served


@pytest.fixture
def client(server):
    with server.client() as client:
        yield client


def upload(client: httpx.Client, path: Path | None = None, data: bytes | None = None, name: str = "probe.jpg",
           **form) -> httpx.Response:
    content = data if data is not None else path.read_bytes()
    return client.post("/api/v1/search", files={"file": (name, content, "image/jpeg")},
                       data={**PURPOSE, **{k: str(v) for k, v in form.items()}})


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("probe_name", sorted(PROBE_PEOPLE))
def test_search_by_upload_finds_each_probe_person_at_rank_1(client, folders, probe_name):
    people = PROBE_PEOPLE[probe_name]
    found = set()
    for face in range(len(people)):  # the largest faces are the named people
        response = upload(client, folders["people"] / "probes" / probe_name, face=face)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["probe_path"] is None, "an upload is not a file on the server"
        assert result["matches"] and result["matches"][0]["within_limits"], f"{probe_name} face {face}"
        found.add(person_of(result["matches"][0]["source"]["path"]))
    assert found == people


def test_search_by_server_path_inside_an_allowed_root(client, folders):
    probe = folders["people"] / "probes" / "obama1.jpg"
    response = client.post("/api/v1/search", data={"path": str(probe), "top_k": "3", **PURPOSE})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["probe_path"] == str(probe.resolve())
    assert person_of(result["matches"][0]["source"]["path"]) == "obama" and len(result["matches"]) <= 3


def test_a_probe_without_a_face_is_422_problem_json(client):
    response = upload(client, data=png(Image.new("RGB", (400, 300), (120, 130, 140))), name="grey.png")
    assert response.status_code == 422
    assert problem_of(response)["reason"] == "no_face"


@pytest.mark.parametrize(
    ("name", "content", "status", "reason"),
    [
        ("text.jpg", b"this is not an image, whatever its name says", 415, "not_an_image"),
        ("empty.jpg", b"", 422, "empty"),
        ("cut.png", None, 422, "corrupt"),  # a PNG header with its data cut off
        ("bomb.png", "bomb", 413, "too_large"),  # more pixels than --max-pixels: refused from the header
        ("big.jpg", b"\xff" * (MAX_UPLOAD + 1), 413, "too_large"),  # over the per-file cap
        ("huge.jpg", b"\xff" * (3 * MAX_UPLOAD), 413, "too_large"),  # over the request cap: refused unread
    ],
)
def test_bad_uploads_are_refused_with_problem_json(client, name, content, status, reason):
    if content is None:
        content = png(Image.new("RGB", (300, 300), (10, 200, 30)))[:60]
    elif content == "bomb":
        content = png(Image.new("1", (3000, 2000)))  # 6 Mpx in a few kB
    response = upload(client, data=content, name=name)
    assert response.status_code == status, response.text
    assert problem_of(response)["reason"] == reason


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "{people}/../../../etc/passwd", "{incoming}/escape/passwd", "relative/photo.jpg", "/"],
)
def test_server_paths_outside_the_allowed_roots_are_403(client, folders, path):
    path = path.format(**{k: str(v) for k, v in folders.items()})
    search = client.post("/api/v1/search", data={"path": path, **PURPOSE})
    job = client.post("/api/v1/jobs", json={"paths": [path]})
    expected = 400 if not path.startswith("/") else 403
    for response in (search, job):
        assert response.status_code == expected, response.text
        assert problem_of(response)["reason"] == ("bad_argument" if expected == 400 else "forbidden_path")


@pytest.mark.parametrize(
    ("form", "status", "reason"),
    [
        ({"top_k": "0"}, 400, "bad_argument"),
        ({"max_fmr": "2"}, 400, "bad_argument"),
        ({"face": "7"}, 422, "bad_face_index"),
        ({"top_k": "many"}, 422, "bad_argument"),
    ],
)
def test_bad_search_options_are_problems(client, folders, form, status, reason):
    response = upload(client, folders["people"] / "probes" / "obama1.jpg", **form)
    assert response.status_code == status, response.text
    assert problem_of(response)["reason"] == reason


def test_upload_and_path_together_is_a_bad_argument(client, folders):
    probe = folders["people"] / "probes" / "obama1.jpg"
    response = client.post("/api/v1/search", files={"file": ("p.jpg", probe.read_bytes())},
                           data={"path": str(probe), **PURPOSE})
    assert response.status_code == 400 and problem_of(response)["reason"] == "bad_argument"


def test_verify_two_uploads(client, folders):
    people = folders["people"]
    response = client.post("/api/v1/verify", data=PURPOSE, files={
        "a": ("a.jpg", (people / "probes" / "obama1.jpg").read_bytes()),
        "b": ("b.jpg", (people / "train" / "obama" / "obama.jpg").read_bytes()),
    })
    assert response.status_code == 200, response.text
    assert response.json()["same_person"] is True


def test_faces_of_an_upload_and_of_a_catalogued_file(client, folders):
    two = (folders["people"] / "probes" / "obama_and_biden.jpg").read_bytes()
    detected = client.post("/api/v1/faces", files={"file": ("two.jpg", two)}).json()
    assert detected["indexed"] is False and len(detected["faces"]) >= 2
    stored_path = str((folders["people"] / "train" / "biden" / "biden.jpg").resolve())
    stored = client.get("/api/v1/media/faces", params={"path": stored_path}).json()
    assert stored["indexed"] is True and stored["faces"][0]["face_id"] is not None


def test_media_listing_pages_through_every_file(client):
    first = client.get("/api/v1/media", params={"limit": 4}).json()
    assert first["total"] == 9 and len(first["items"]) == 4  # named_people/train: 9 photos
    seen = [item["path"] for item in first["items"]]
    for offset in (4, 8):
        seen += [item["path"] for item in client.get("/api/v1/media", params={"limit": 4, "offset": offset}).json()["items"]]
    assert len(set(seen)) == 9 and seen == sorted(seen)
    assert client.get("/api/v1/media", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/media", params={"status": "failed"}).json()["total"] == 0


def test_media_files_are_served_with_range_requests_and_only_when_catalogued(client, folders):
    path = (folders["people"] / "train" / "obama" / "obama.jpg").resolve()
    part = client.get("/api/v1/media/file", params={"path": str(path)}, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == path.read_bytes()[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{path.stat().st_size}"
    refused = client.get("/api/v1/media/file", params={"path": "/etc/passwd"})
    assert refused.status_code == 404 and problem_of(refused)["reason"] == "not_found"


@pytest.mark.parametrize("name", ["../catalog.sqlite3", "..%2Fcatalog.sqlite3", "nothing.jpg"])
def test_thumbnails_cannot_leave_the_thumbnail_folder(client, name):
    assert client.get(f"/api/v1/thumbnails/{name}").status_code == 404


def test_evidence_json_and_html_and_the_search_log(client, folders):
    result = upload(client, folders["people"] / "probes" / "obama1.jpg").json()
    best = result["matches"][0]
    evidence = client.get(f"/api/v1/evidence/{best['match_id']}").json()
    assert evidence["similarity"] == best["similarity"] and evidence["fmr"] == best["fmr"]
    assert evidence["source"]["path"] == best["source"]["path"] and evidence["source_changed"] is False
    page = client.get(f"/api/v1/evidence/{best['match_id']}/html")
    assert page.status_code == 200 and f"Match {best['match_id']}" in page.text
    assert client.get("/api/v1/evidence/999999-1").status_code == 404
    log = client.get("/api/v1/searches", params={"limit": 5}).json()
    assert log["items"][0]["search_id"] == result["search_id"]
    reopened = client.get(f"/api/v1/searches/{result['search_id']}").json()
    assert [m["match_id"] for m in reopened["matches"]] == [m["match_id"] for m in result["matches"]]
    assert [m["similarity"] for m in reopened["matches"]] == [m["similarity"] for m in result["matches"]]


def test_an_index_job_reaches_done_and_its_faces_become_searchable_then_removable(client, server, folders):
    incoming = folders["incoming"] / "team"
    incoming.mkdir()
    before = upload(client, probe_sample()).json()
    assert not before["matches"], "the sample player is not in the library yet"
    for sample in gallery_samples():
        shutil.copy(sample, incoming / sample.name)
    job = client.post("/api/v1/jobs", json={"paths": [str(incoming)]})
    assert job.status_code == 202 and job.json()["started_by"]
    done = server.wait_for_job(client, job.json()["job_id"])
    assert done["status"] == "finished" and done["files_done"] == done["total_files"] == 2 and done["faces"] > 10
    after = upload(client, probe_sample()).json()
    assert after["matches"] and Path(after["matches"][0]["source"]["path"]).parent == incoming.resolve()
    gone = incoming.resolve() / "gdp.jpg"
    gone.unlink()  # catalogued, then deleted on disk: a clear 404, not a server error
    missing = client.get("/api/v1/media/file", params={"path": str(gone)})
    assert missing.status_code == 404 and "no longer on disk" in problem_of(missing)["detail"]
    with server.client(server.keys["root"]) as admin:  # removal is an admin's
        removed = admin.post("/api/v1/remove", json={"path": str(incoming.resolve())}).json()
    assert removed["removed"] == done["faces"]
    assert not upload(client, probe_sample()).json()["matches"]


def test_twenty_concurrent_searches_while_an_ingest_job_writes(client, server, folders):
    probe = (folders["people"] / "probes" / "obama1.jpg").read_bytes()
    job = client.post("/api/v1/jobs", json={"paths": [str(folders["crowds"])]}).json()
    time.sleep(0.5)  # let the job get going

    def search(_: int) -> tuple[int, str, int]:
        with server.client() as own:
            response = own.post("/api/v1/search", files={"file": ("p.jpg", probe)}, data=PURPOSE)
            body = response.json()
            return response.status_code, person_of(body["matches"][0]["source"]["path"]), body["gallery_size"]

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(search, range(20)))
    during = client.get(f"/api/v1/jobs/{job['job_id']}").json()
    assert [status for status, _, _ in outcomes] == [200] * 20
    assert {person for _, person, _ in outcomes} == {"obama"}
    assert during["status"] == "running", "the searches should have overlapped the ingest"
    cancelled = server.wait_for_job(client, client.post(f"/api/v1/jobs/{job['job_id']}/cancel").json()["job_id"])
    assert cancelled["status"] == "cancelled" and cancelled["files_done"] < cancelled["total_files"]
    stats = client.get("/api/v1/stats").json()
    assert stats["faces"] == stats["index_size"], "catalog and index agree after a cancelled job"


def test_a_second_job_while_one_runs_is_409(client, folders):
    first = client.post("/api/v1/jobs", json={"paths": [str(folders["crowds"])]}).json()
    second = client.post("/api/v1/jobs", json={"paths": [str(folders["people"])]})
    client.post(f"/api/v1/jobs/{first['job_id']}/cancel")
    assert second.status_code == 409 and problem_of(second)["reason"] == "busy"


def test_api_docs_are_served_without_a_cdn(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-static/swagger-ui-bundle.js" in docs.text
    assert "https://" not in docs.text and "http://" not in docs.text
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/v1/search", "/api/v1/jobs", "/api/v1/evidence/{match_id}"} <= set(schema["paths"])


def test_unknown_routes_and_methods_are_problems(client):
    assert problem_of(client.get("/api/v1/nothing"))["reason"] == "not_found"
    assert problem_of(client.get("/api/v1/search"))["status"] == 405


def test_search_within_one_folder_compares_only_its_faces(client, folders):
    folder = (folders["people"] / "train" / "biden").resolve()
    result = upload(client, folders["people"] / "probes" / "obama1.jpg", show_all="true", **{"in": str(folder)}).json()
    assert result["searched_in"] == str(folder) and result["gallery_size"] == 2
    assert {person_of(m["source"]["path"]) for m in result["matches"]} == {"biden"}
    assert not any(m["within_limits"] for m in result["matches"]), "Obama is not Biden"


@pytest.mark.parametrize("route", ["/api/v1/search", "/api/v1/verify"])
@pytest.mark.parametrize("purpose", [{}, {"case": "CASE-1"}, {"case": "CASE-1", "reason": "short"},
                                     {"case": " ", "reason": "a long enough reason, but no case"}])
def test_a_search_or_verify_without_a_stated_purpose_is_422(client, folders, route, purpose):
    probe = (folders["people"] / "probes" / "obama1.jpg").read_bytes()
    files = {"file": ("p.jpg", probe)} if route.endswith("search") else {"a": ("a.jpg", probe), "b": ("b.jpg", probe)}
    response = client.post(route, files=files, data=purpose)
    assert response.status_code == 422, response.text
    assert problem_of(response)["reason"] == "purpose_required"


def test_an_http_search_is_audited_with_its_actor_address_and_purpose(client, server, folders):
    result = upload(client, folders["people"] / "probes" / "obama1.jpg").json()
    entry = [e for e in server.facefind.audit_log.entries() if e["action"] == "search"][-1]
    assert entry["actor"] == "ivy" and entry["client_address"] == "127.0.0.1"
    assert json.loads(entry["purpose"]) == PURPOSE
    assert json.loads(entry["details"])["search_id"] == result["search_id"]


def test_the_results_page_marks_fmrs_extrapolated_by_the_tail_model(server, folders):
    """The web UI says which FMRs lie beyond the impostor data (the tail model) exactly where the JSON does."""
    probe = folders["people"] / "probes" / "obama1.jpg"
    with server.client() as api:
        matches = upload(api, probe).json()["matches"]
    sources = [match["fmr_source"] for match in matches]
    assert {"tail_model", "bound"} & set(sources)  # a clear same-person match scores beyond the measured pairs
    browser = server.login("ivy")
    page = browser.post("/ui/results", files={"file": ("probe.jpg", probe.read_bytes(), "image/jpeg")},
                        data=PURPOSE, headers={"x-csrf-token": browser.csrf})
    assert page.status_code == 200, page.text
    assert page.text.count("(extrapolated)</span>") == sources.count("tail_model")
    assert page.text.count("(bound)</span>") == sources.count("bound")
