import pytest

from tests.cli_helpers import run_modules


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_shards, prefect_env):
    """The train CLI's contract cases, each its own process, run at once on the session's Prefect server (the
    early temporary server of a bare CLI is tested in test_no_orphans): {case: CompletedProcess}."""
    tmp = tmp_path_factory.mktemp("train-cli")
    (tmp / "not-shards").mkdir()
    (tmp / "taken").mkdir()
    (tmp / "taken" / "summary.json").write_text("{}")
    cases = {
        "help": ("--help",),
        "no manifest": ("--shards", tmp / "not-shards", "--out", tmp / "run"),
        "bad parameter": ("--epochs", "0"),
        "existing run": ("--shards", digits_shards, "--out", tmp / "taken"),
    }
    results = run_modules(*[("flows.train", *args) for args in cases.values()], cwd=tmp, env=prefect_env)
    return tmp, dict(zip(cases, results))


def test_help_documents_every_option(runs):
    res = runs[1]["help"]
    assert res.returncode == 0
    for opt in ("--shards", "--out", "--optimizer", "--local-optimizer", "--lr", "--window", "--rho", "--gamma",
                "--batch-size", "--epochs", "--workers", "--model", "--target-accuracy", "--eval-every", "--seed",
                "--resume"):
        assert opt in res.stdout


def test_a_folder_without_manifest_fails_in_one_line(runs):
    tmp, results = runs
    res = results["no manifest"]
    assert res.returncode == 2 and "has no committed manifest" in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and not (tmp / "run").exists()


def test_a_bad_parameter_fails_in_one_line(runs):
    res = runs[1]["bad parameter"]
    assert res.returncode == 2 and res.stderr.startswith("error: --epochs:") and "Traceback" not in res.stderr


def test_an_existing_run_folder_is_refused_before_training(runs):
    tmp, results = runs
    res = results["existing run"]
    assert res.returncode == 2 and "already exists; pass --overwrite or --resume" in res.stderr
    assert "Traceback" not in res.stderr and (tmp / "taken" / "summary.json").read_text() == "{}"
