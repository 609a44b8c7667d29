"""The command-line contract of the flow CLIs, run as subprocesses: bad input is one ``error:`` line on stderr
naming the file, column or parameter, exit 2, no traceback from anyone, and nothing left behind."""

import json
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli_helpers import assert_one_error_line, run_module, run_modules
from tests.conftest import mixture, write_parquet
from tests.shard_fixtures import manifest_file


@pytest.fixture
def good(tmp_path):
    x, y = mixture(200, dim=3)
    return write_parquet(tmp_path / "good.parquet", x, y)


def bad_sources(tmp_path, good):
    """(arguments, fragments the error must name) for every bad input of build_shards."""
    write_parquet(tmp_path / "empty.parquet", np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    pq.write_table(pa.table({"name": ["a", "b"], "label": [0, 1]}), tmp_path / "text.parquet")
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"]}), tmp_path / "mixed.parquet")
    x, y = mixture(300, dim=3)
    x[[1, 2, 5], 2] = np.nan
    write_parquet(tmp_path / "nan.parquet", x, y)
    write_parquet(tmp_path / "tiny.parquet", *mixture(3, dim=2))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.parquet").write_bytes(good.read_bytes())
    (tmp_path / "src" / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    return {
        "missing source": (["--source", tmp_path / "nope.parquet"], ["nope.parquet", "does not exist"]),
        "empty": (["--source", tmp_path / "empty.parquet"], ["empty.parquet", "is empty"]),
        "no feature columns": (["--source", tmp_path / "text.parquet"], ["no feature columns", "--features"]),
        "text feature": (["--source", tmp_path / "mixed.parquet", "--features", "a,name"],
                         ["feature column 'name'", "non-numeric type string"]),
        "nan": (["--source", tmp_path / "nan.parquet"], ["'c2': 3", "--nan drop"]),
        "too few rows": (["--source", tmp_path / "tiny.parquet", "--workers", "8"], ["3 rows", "--workers 8"]),
        "corrupt file": (["--source", tmp_path / "src"], ["b.parquet", "corrupt or unreadable"]),
        "missing label": (["--source", good, "--label", "target"], ["label column 'target' does not exist"]),
        "existing output": (["--source", good, "--out", tmp_path / "taken"], ["taken", "already exists", "keep.txt"]),
        "workers below one": (["--workers", "0"], ["--workers must be >= 1"]),
        "unknown family": (["--family", "minhash"], ["--family", "invalid choice: 'minhash'"]),
    }


CASES = ["missing source", "empty", "no feature columns", "text feature", "nan", "too few rows", "corrupt file",
         "missing label", "existing output", "workers below one", "unknown family"]


INDEX_CASES = ["nan", "corrupt file", "existing output"]  # the shared checks; build_shards runs every case


BUILD_CASES = [("flows.build_shards", c) for c in CASES] + [("flows.build_index", c) for c in INDEX_CASES]


@pytest.fixture(scope="module")
def build_errors(tmp_path_factory, prefect_env):
    """Every case of BUILD_CASES run as its own CLI process, all at once (their imports share the two cores):
    {case: (its CompletedProcess, its --out, the fragments its error must name)}, and the folder they ran in."""
    tmp = tmp_path_factory.mktemp("bad-builds")
    x, y = mixture(200, dim=3)
    sources = bad_sources(tmp, write_parquet(tmp / "good.parquet", x, y))
    runs, outs = [], []
    for i, (module, case) in enumerate(BUILD_CASES):
        args = sources[case][0]
        outs.append(tmp / f"out-{i}")
        runs.append((module, *args) if "--out" in args else (module, *args, "--out", outs[-1]))
    results = run_modules(*runs, cwd=tmp, env=prefect_env)
    return tmp, {key: (res, out, sources[key[1]][1]) for key, res, out in zip(BUILD_CASES, results, outs)}


@pytest.mark.parametrize("module, case", BUILD_CASES)
def test_build_bad_input_is_one_line(module, case, build_errors):
    tmp, results = build_errors
    res, out, fragments = results[module, case]
    assert_one_error_line(res, *fragments)
    assert not out.exists() and not list(tmp.glob(".out*.tmp-*")), "output or staging left behind"
    assert (tmp / "taken" / "keep.txt").read_text() == "mine"


def test_debug_shows_the_traceback(tmp_path, prefect_env):
    res = run_module("flows.build_shards", "--source", tmp_path / "nope.parquet", "--debug", cwd=tmp_path,
                     env=prefect_env)
    assert res.returncode != 0 and "Traceback (most recent call last)" in res.stderr
    assert "does not exist" in res.stderr


@pytest.fixture
def shard_copy(digits_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(digits_shards, copy)
    return copy


def edit_manifest(folder, change) -> None:
    path = manifest_file(folder)
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def double_rows(m):
    m["rows_per_shard"] = [2 * n for n in m["rows_per_shard"]]
    for s in m["shards"]:
        s["rows"] *= 2
        s["files"][0]["rows"] *= 2


TRAIN_CASES = {
    "missing module": (["--model", "nosuchmod:factory"], ["--model nosuchmod:factory", "cannot import module"]),
    "missing attribute": (["--model", "tests.train.models:nope"], ["tests.train.models", "no callable 'nope'"]),
    "not a module": (["--model", "tests.train.models:not_a_module"], ["returned str, not a torch.nn.Module"]),
    "wrong output shape": (["--model", "tests.train.models:three_logits"], ["(2, 3)", "(2, 10)"]),
    "more workers than shards": (["--workers", "9"], ["--workers 9 is more than the 4 shards"]),
    "bad parameter": (["--epochs", "0"], ["--epochs", "greater than or equal to 1"]),
}


@pytest.fixture(scope="module")
def train_errors(digits_shards, tmp_path_factory, prefect_env):
    """Every case of TRAIN_CASES run at once, each on its own copy of the shards: {case: (its
    CompletedProcess, its --out)}."""
    tmp = tmp_path_factory.mktemp("bad-trains")
    runs, outs = [], []
    for i, (args, _) in enumerate(TRAIN_CASES.values()):
        copy = shutil.copytree(digits_shards, tmp / f"shards-{i}")
        outs.append(tmp / f"run-{i}")
        runs.append(("flows.train", "--shards", copy, "--out", outs[-1], *args))
    results = run_modules(*runs, cwd=tmp, env=prefect_env)
    return dict(zip(TRAIN_CASES, zip(results, outs)))


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input_is_one_line(case, train_errors):
    res, out = train_errors[case]
    assert_one_error_line(res, *TRAIN_CASES[case][1])
    assert not out.exists()


def test_train_refuses_the_wrong_kind_of_folder_in_one_line(digits_shards, digits_index, tmp_path, prefect_env):
    cases = [
        (["--index", digits_shards], ["--index", "is a shard set", "pass it as --shards"]),
        (["--shards", digits_index], ["--shards", "is an index", "pass it as --index"]),
        (["--shards", digits_shards, "--index", digits_index], ["--shards", "--index", "not both"]),
        (["--index", digits_index, "--workers", "60"], ["--workers 60 × --batch-size 32", "1619 training rows"]),
    ]
    results = run_modules(*[("flows.train", *args, "--out", tmp_path / "run") for args, _ in cases], cwd=tmp_path,
                           env=prefect_env)
    for res, (_, fragments) in zip(results, cases):
        assert_one_error_line(res, *fragments)
    assert not (tmp_path / "run").exists()


MANIFEST_CASES = {
    "rows doubled everywhere": (double_rows, ["shard-00000-of-00004.parquet holds 405 rows, the manifest says 810"]),
    "rows_per_shard edited": (lambda m: m["rows_per_shard"].__setitem__(0, 999),
                              ["00000001.json", "shard 0 is inconsistent"]),
    "field missing": (lambda m: m.pop("columns"), ["00000001.json", "columns", "Field required"]),
}


@pytest.fixture(scope="module")
def manifest_errors(digits_shards, tmp_path_factory, prefect_env):
    """Train on a copy of the shards whose manifest each case of MANIFEST_CASES edited, all at once."""
    tmp = tmp_path_factory.mktemp("bad-manifests")
    runs = []
    for i, (change, _) in enumerate(MANIFEST_CASES.values()):
        copy = shutil.copytree(digits_shards, tmp / f"shards-{i}")
        edit_manifest(copy, change)
        runs.append(("flows.train", "--shards", copy, "--out", tmp / f"run-{i}"))
    return dict(zip(MANIFEST_CASES, run_modules(*runs, cwd=tmp, env=prefect_env)))


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_train_refuses_a_manifest_that_does_not_match_its_files(case, manifest_errors):
    assert_one_error_line(manifest_errors[case], *MANIFEST_CASES[case][1])


def test_pipeline_and_experiment_bad_input_is_one_line(tmp_path, prefect_env):
    (tmp_path / "pipeline.json").write_text('{"build": {"workers": 0}, "train": {}}')
    (tmp_path / "bad.toml").write_text("shardings = 3\n")
    results = run_modules(("flows.pipeline", "--source", tmp_path / "nope.parquet"),
                          ("flows.pipeline", "--config", tmp_path / "pipeline.json"),
                          ("flows.experiment", "--config", tmp_path / "none.toml", "--out", tmp_path / "x"),
                          ("flows.experiment", "--config", tmp_path / "bad.toml", "--out", tmp_path / "x"),
                          cwd=tmp_path, env=prefect_env)
    assert_one_error_line(results[0], "nope.parquet", "does not exist")
    assert_one_error_line(results[1], "build.workers: --workers must be >= 1")
    assert_one_error_line(results[2], "--config", "none.toml", "does not exist")
    assert_one_error_line(results[3], "bad.toml", "not a valid experiment grid")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root, as in CI); skipped with the reason where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                         text=True)
    if res.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_naming_the_output(small_disk, tmp_path, prefect_env):
    out = small_disk / "shards"
    res = run_module("flows.build_shards", "--source", "demo:blobs?rows=40000&dim=16", "--out", out, cwd=tmp_path,
                     env=prefect_env)
    assert_one_error_line(res, "no space left on the device", str(out), code=1)
    assert list(small_disk.iterdir()) == [], "the failed build left files on the full disk"


URL_CASES = [("flows.build_shards", "--out"), ("flows.build_index", "--source"), ("flows.train", "--shards"),
             ("flows.train", "--index")]


@pytest.fixture(scope="module")
def url_errors(tmp_path_factory, prefect_env):
    """Each case of URL_CASES run at once, each in a working directory of its own: {case: (CompletedProcess,
    its working directory)}."""
    folders = [tmp_path_factory.mktemp("url") for _ in URL_CASES]
    results = run_modules(*[(module, flag, "gs://data/shards") for module, flag in URL_CASES], cwd=folders,
                          env=prefect_env)
    return {case: (res, cwd) for case, res, cwd in zip(URL_CASES, results, folders)}


@pytest.mark.parametrize("module, flag", URL_CASES)
def test_a_url_whose_backend_is_not_installed_names_the_package(module, flag, url_errors):
    res, cwd = url_errors[module, flag]
    assert_one_error_line(res, f"{flag} gs://data/shards", "needs the package gcsfs", "pip install gcsfs")
    assert not list(cwd.iterdir()), "something was written to the working directory"
