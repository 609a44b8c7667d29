"""--overwrite replaces only what simshard made, and outputs never overlap their inputs (run as a user runs the
CLIs). Each case is one the issue found deleting data."""

import shutil

import pytest

from storage.shardset import ShardSet
from tests.cli_helpers import assert_one_error_line, run_module, run_modules
from tests.conftest import mixture, write_parquet


def make_source(folder):
    """A source folder ``folder/data`` holding one Parquet file of 400 rows."""
    src = folder / "data"
    src.mkdir()
    write_parquet(src / "part-0.parquet", *mixture(400, dim=3))
    return src


@pytest.fixture
def source_dir(tmp_path):
    return make_source(tmp_path)


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, prefect_env):
    """Four builds that must be refused, run as CLI processes all at once, each with a source of its own:
    {case: (CompletedProcess, its source folder, its working directory)}."""
    runs = {}
    for case in ("into source", "inside source", "working directory", "foreign folder"):
        tmp = tmp_path_factory.mktemp("refused")
        src, work = make_source(tmp), tmp / "work"
        work.mkdir()
        if case == "working directory":
            (work / "notes.txt").write_text("mine")
        if case == "foreign folder":
            (work / "out").mkdir()
            (work / "out" / "important.txt").write_text("keep")
        out = {"into source": src, "inside source": src / "shards", "working directory": ".",
               "foreign folder": work / "out"}[case]
        overwrite = [] if case == "inside source" else ["--overwrite"]
        runs[case] = (("flows.build_shards", "--source", src, "--out", out, *overwrite), src, work)
    results = run_modules(*[run for run, _, _ in runs.values()], cwd=[work for _, _, work in runs.values()],
                          env=prefect_env)
    return {case: (res, src, work) for (case, (_, src, work)), res in zip(runs.items(), results)}


def test_a_build_into_its_source_folder_is_refused(refusals):
    res, src, _ = refusals["into source"]
    assert_one_error_line(res, "--out", "is --source")
    assert (src / "part-0.parquet").is_file()


def test_a_build_inside_its_source_folder_is_refused(refusals):
    res, src, _ = refusals["inside source"]
    assert_one_error_line(res, "is inside --source")
    assert not (src / "shards").exists()


def test_overwrite_of_the_working_directory_is_refused(refusals):
    res, src, work = refusals["working directory"]
    assert_one_error_line(res, "--overwrite replaces only a shard set simshard made", "notes.txt")
    assert (work / "notes.txt").read_text() == "mine" and (src / "part-0.parquet").is_file()


def test_overwrite_of_a_folder_simshard_did_not_make_is_refused(refusals):
    res, _, work = refusals["foreign folder"]
    out = work / "out"
    assert_one_error_line(res, str(out), "important.txt")
    assert (out / "important.txt").read_text() == "keep"


def test_overwrite_replaces_a_shard_set_but_not_a_file_added_to_it(digits_shards, source_dir, tmp_path,
                                                                   prefect_env):
    out = tmp_path / "shards"
    shutil.copytree(digits_shards, out)
    res = run_module("flows.build_shards", "--source", source_dir, "--out", out, "--overwrite", "--workers", "2",
                     cwd=tmp_path, env=prefect_env)
    assert res.returncode == 0, res.stderr
    (out / "my-notes.md").write_text("mine")
    res = run_module("flows.build_shards", "--source", source_dir, "--out", out, "--overwrite", "--workers", "2",
                     cwd=tmp_path, env=prefect_env)
    assert_one_error_line(res, "my-notes.md", "which simshard did not make")
    assert (out / "my-notes.md").read_text() == "mine" and ShardSet(out).workers == 2


def test_train_never_overwrites_its_shard_set(digits_shards, tmp_path, prefect_env):
    shards = tmp_path / "shards"
    shutil.copytree(digits_shards, shards)
    same, inside, around = run_modules(("flows.train", "--shards", shards, "--out", shards, "--overwrite"),
                                       ("flows.train", "--shards", shards, "--out", shards / "run"),
                                       ("flows.train", "--shards", shards, "--out", tmp_path, "--overwrite"),
                                       cwd=tmp_path, env=prefect_env)
    assert_one_error_line(same, "--out", "is --shards")
    assert_one_error_line(inside, "is inside --shards")
    assert_one_error_line(around, "contains --shards")
    assert ShardSet(shards).workers == 4


def test_train_overwrite_replaces_only_a_run_folder(digits_shards, tmp_path, prefect_env):
    run = tmp_path / "run"
    run.mkdir()
    (run / "important.txt").write_text("keep")
    res = run_module("flows.train", "--shards", digits_shards, "--out", run, "--overwrite",
                     cwd=tmp_path, env=prefect_env)
    assert_one_error_line(res, "--overwrite replaces only a run folder simshard made")
    assert (run / "important.txt").read_text() == "keep"


def test_the_pipeline_default_overwrite_refuses_a_folder_it_did_not_make(tmp_path, prefect_env):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "data.csv").write_text("1,2,3")
    res = run_module("flows.pipeline", "--shards", shards, "--run", tmp_path / "run", cwd=tmp_path, env=prefect_env)
    assert_one_error_line(res, "data.csv")
    assert (shards / "data.csv").read_text() == "1,2,3"
