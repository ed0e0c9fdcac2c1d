"""Milvus-only behaviour (the shared contract is tests/index/test_contract.py): specs, collections per library
and model, state kept with the collection, Strong reads across clients, clear errors, the dev server."""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

from facefind.devservices.milvus import free_ports, milvus_server
from facefind.errors import FaceFindError
from facefind.index import open_index
from facefind.index.milvus_index import MilvusIndex, collection_name, parse_spec
from tests.index.conftest import unit


@pytest.mark.parametrize("spec, uri, library", [
    ("milvus://db.example:19531", "http://db.example:19531", None),
    ("milvus://10.0.0.5", "http://10.0.0.5:19530", None),
    ("milvus://127.0.0.1:19530/newsroom", "http://127.0.0.1:19530", "newsroom"),
])
def test_specs(spec, uri, library):
    assert parse_spec(spec) == (uri, library)


@pytest.mark.parametrize("spec", ["milvus://", "milvus://host:notaport", "milvus://host:1/bad-name!", "http://h:1"])
def test_bad_specs_are_clear_errors(spec):
    with pytest.raises(FaceFindError) as raised:
        parse_spec(spec)
    assert raised.value.reason == "bad_argument"


def test_one_collection_per_library_and_model():
    names = {collection_name(library, model) for library in ("a", "b") for model in ("arcface:1", "arcface-1")}
    assert len(names) == 4  # models differing only in punctuation still get their own collection
    assert all(name.startswith("facefind_") and name.replace("_", "").isalnum() for name in names)


def test_a_committed_batch_is_searchable_at_once_from_another_client(milvus_spec):
    writer = open_index(milvus_spec, 8, model_id="m")
    reader = open_index(milvus_spec, 8, model_id="m")  # as another service replica would
    try:
        assert writer._client.describe_collection(writer.collection)["consistency_level"] == 0  # 0 = Strong
        vectors = unit(60, seed=3)
        for batch in range(6):
            ids = np.arange(batch * 10, batch * 10 + 10)
            writer.add(ids, vectors[ids])
            assert len(reader) == batch * 10 + 10
            assert reader.search(vectors[ids[-1:]], 1)[1][0, 0] == ids[-1]
        writer.remove(np.arange(5))
        assert len(reader) == 55 and 0 not in reader.search(vectors[:1], 5)[1][0]
    finally:
        writer.close()
        reader.close()


def test_state_lives_with_the_collection(milvus_spec):
    index = open_index(milvus_spec, 8, model_id="m")
    try:
        assert index.read_state() is None
        index.write_state({"revision": 7, "count": 0})
        other = open_index(milvus_spec, 8, model_id="m")
        assert other.read_state() == {"revision": 7, "count": 0}
        other.close()
        index.reset()  # a rebuild starts from nothing, state included
        assert index.read_state() is None
    finally:
        index.close()


def test_libraries_and_models_are_kept_apart(milvus_spec):
    first = open_index(milvus_spec, 8, model_id="m1")
    second = open_index(milvus_spec, 8, model_id="m2")
    try:
        first.add(np.arange(3), unit(3))
        assert len(first) == 3 and len(second) == 0
    finally:
        first.close()
        second.close()


def test_a_collection_of_another_size_is_refused(milvus_spec):
    open_index(milvus_spec, 8, model_id="m").close()
    with pytest.raises(FaceFindError, match="size 8") as raised:
        open_index(milvus_spec, 16, model_id="m")
    assert raised.value.reason == "model_mismatch"


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(FaceFindError) as raised:
        MilvusIndex(f"http://127.0.0.1:{free_ports(1)[0]}", "nothing_here", 8)
    assert raised.value.reason == "index_unavailable" and "127.0.0.1" in str(raised.value)


def _listening(pid: int) -> list[str]:
    """Local addresses the process listens on (TCP)."""
    output = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in output.splitlines() if f"pid={pid}," in line]


def test_dev_server_keeps_etcd_on_loopback_and_leaves_nothing():
    with milvus_server() as server:
        listening = _listening(server.pid)
        etcd_config = (server.data_dir / "configs" / "embedEtcd.yaml").read_text()
        config = (server.data_dir / "configs" / "milvus.yaml").read_text()
        data_dir = server.data_dir
    etcd_ports = set(re.findall(r"127\.0\.0\.1:(\d+)", etcd_config))  # client and peer, free ports
    etcd = [address for address in listening if address.rsplit(":", 1)[1] in etcd_ports]
    assert len(etcd) == 2 and all(address.startswith("127.0.0.1:") for address in etcd)
    assert "localhost" not in config.split("minio:")[0]  # etcd endpoints: 127.0.0.1
    assert len(re.findall(r"^  ip: 127.0.0.1", config, re.M)) == 7  # every component advertises loopback
    assert not data_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_dev_server_with_a_data_folder_keeps_its_data_across_restarts(tmp_path):
    vectors = unit(10)
    with milvus_server(tmp_path / "milvus") as server:
        index = MilvusIndex(server.uri, "kept", 8)
        index.add(np.arange(10), vectors)
        index.close()
    with milvus_server(tmp_path / "milvus") as server:  # new ports, same data
        index = MilvusIndex(server.uri, "kept", 8)
        assert len(index) == 10 and index.search(vectors[4:5], 1)[1][0, 0] == 4
        index.close()
    assert (tmp_path / "milvus").is_dir()
