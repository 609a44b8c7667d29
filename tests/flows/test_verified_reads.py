"""Verified reads: a flipped bit or a NaN in a shard file stops training with one line naming the file, and
``python -m flows.verify`` checks every file completely."""

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli_helpers import assert_one_error_line, run_module
from tests.shard_fixtures import listed_file, manifest_file

SHARD = "shard-00001-of-00004.parquet"


@pytest.fixture
def shard_copy(digits_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(digits_shards, copy)
    return copy


def flip_a_bit(path, *, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def rewrite_with_nan(folder, name: str, column: str, row: int) -> None:
    """Put a NaN into ``column`` of one shard file and update the manifest so that only the value is wrong."""
    path = listed_file(folder, name)
    table = pq.read_table(path)
    values = table.column(column).to_numpy().copy()
    values[row] = np.nan
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.float32()))
    pq.write_table(table, path, write_page_checksum=True)
    manifest = json.loads(manifest_file(folder).read_text())
    for entry in [f for s in manifest["shards"] for f in s["files"]]:
        if entry["path"].endswith(name):
            entry.update(bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    manifest_file(folder).write_text(json.dumps(manifest))


def test_a_flipped_bit_stops_rpc_training_with_one_line(shard_copy, tmp_path, prefect_env):
    flip_a_bit(listed_file(shard_copy, SHARD))
    res = run_module("flows.train", "--shards", shard_copy, "--out", tmp_path / "run", "--epochs", "3", cwd=tmp_path,
                     env=prefect_env)
    assert_one_error_line(res, SHARD, "is corrupt", "rebuild the shard set")


def test_a_nan_in_a_shard_stops_training_naming_file_and_column(shard_copy, tmp_path):
    rewrite_with_nan(shard_copy, SHARD, "f05", row=7)
    res = run_module("train.simulate", "--shards", shard_copy, "--out", tmp_path / "run", "--epochs", "2",
                     cwd=tmp_path)
    assert_one_error_line(res, SHARD, "column 'f05' holds NaN or inf")  # RPC: as the flipped bit above


def test_verify_checks_every_file(shard_copy, tmp_path, prefect_env):
    res = run_module("flows.verify", shard_copy, cwd=tmp_path, env=prefect_env)
    assert res.returncode == 0 and res.stderr == "" and "5 files, 1797 rows" in res.stdout, res.stderr
    rewrite_with_nan(shard_copy, SHARD, "f10", row=0)
    res = run_module("flows.verify", shard_copy, cwd=tmp_path, env=prefect_env)
    assert_one_error_line(res, SHARD, "column 'f10'")
    flip_a_bit(listed_file(shard_copy, "validation.parquet"))
    res = run_module("flows.verify", shard_copy, cwd=tmp_path, env=prefect_env)
    assert_one_error_line(res, "validation.parquet", "does not match its sha256")


def test_verify_refuses_a_missing_folder_without_waiting_for_prefect(tmp_path):
    res = run_module("flows.verify", tmp_path / "nope", cwd=tmp_path)
    assert_one_error_line(res, "nope does not exist")
    assert "temporary server" not in res.stdout.lower()  # the run never waited for (or used) a Prefect server
