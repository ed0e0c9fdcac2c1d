"""`facefind people ...` as a user runs it: a real process over a library, clear errors, no tracebacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.test_cli import run


def test_people_commands_from_build_to_export(indexed: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    shutil.copytree(indexed / "library", library)
    assert "no people yet" in run(library, "people", "list").stdout
    assert "people," in run(library, "people", "build").stdout
    people = json.loads(run(library, "people", "list", "--json").stdout)
    first = people[0]["person_id"]
    detail = json.loads(run(library, "people", "show", str(first), "--json").stdout)
    assert len(detail["face_list"]) == people[0]["faces"]
    run(library, "people", "name", str(first), "Somebody")
    assert "Somebody" in run(library, "people", "list").stdout
    face = detail["face_list"][-1]["face"]["face_id"]
    split = run(library, "people", "split", str(first), "--face", str(face)).stdout
    assert f"#{first}" in split
    run(library, "people", "build")  # the name and the split survive a re-run
    after = json.loads(run(library, "people", "show", str(first), "--json").stdout)
    assert after["name"] == "Somebody" and face not in {f["face"]["face_id"] for f in after["face_list"]}
    graph = tmp_path / "people.graphml"
    run(library, "people", "export", "--format", "graphml", "--out", str(graph))
    assert "<graphml" in graph.read_text()
    missing = run(library, "people", "name", "999999", "x", check_code=2)
    assert "no person 999999" in missing.stderr
    assert "Usage" in run(library, "people", "--help").stdout
