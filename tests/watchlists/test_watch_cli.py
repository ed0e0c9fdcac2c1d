"""`facefind watch ...` as a user runs it: add, index, hits, ack / dismiss, and clear refusals."""

from __future__ import annotations

import json

from facefind.samples import probe_sample
from tests.test_cli import run


def test_watch_add_index_hits_and_acknowledge(tmp_path, photo_folder):
    library = tmp_path / "lib"
    added = run(library, "watch", "add", "yao", "--photo", str(probe_sample()))
    assert "watchlist 1 yao: 1 entries" in added.stdout
    assert "yao" in run(library, "watch", "list").stdout
    run(library, "index", str(photo_folder), "--workers", "1")
    hits = json.loads(run(library, "watch", "hits", "--json").stdout)
    assert hits["total"] == 1 and hits["items"][0]["media_path"].endswith("players.jpg")
    assert "hit 1 acknowledged" in run(library, "watch", "ack", "1").stdout
    assert run(library, "watch", "hits", "--state", "new", "--json").stdout.count('"hit_id"') == 0
    table = run(library, "watch", "hits").stdout
    assert "players.jpg" in table and "acknowledged" in table and "strong" in table


def test_watch_refusals_are_one_line_errors(tmp_path):
    library = tmp_path / "lib"
    nothing = run(library, "watch", "add", "empty", check_code=2)
    assert "give at least one person or reference photo" in nothing.stderr
    missing = run(library, "watch", "dismiss", "7", check_code=2)
    assert "no watchlist hit 7" in missing.stderr
    unset = run(library, "watch", "add", "hook", "--photo", str(probe_sample()), "--webhook", "http://127.0.0.1:9/",
                "--webhook-secret-env", "FACEFIND_TEST_UNSET", check_code=2)
    assert "FACEFIND_TEST_UNSET is not set" in unset.stderr
