import subprocess
import sys


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "flows.train", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_documents_every_option(tmp_path):
    res = run("--help", cwd=tmp_path)
    assert res.returncode == 0
    for opt in ("--shards", "--out", "--optimizer", "--local-optimizer", "--lr", "--window", "--rho", "--gamma",
                "--batch-size", "--epochs", "--workers", "--model", "--target-accuracy", "--eval-every", "--seed",
                "--resume"):
        assert opt in res.stdout


def test_a_folder_without_manifest_fails_in_one_line(tmp_path):
    (tmp_path / "not-shards").mkdir()
    res = run("--shards", str(tmp_path / "not-shards"), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 2 and "has no committed manifest" in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_bad_parameter_fails_in_one_line(tmp_path):
    res = run("--epochs", "0", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: --epochs:") and "Traceback" not in res.stderr


def test_an_existing_run_folder_is_refused_before_training(tmp_path, digits_shards):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("{}")
    res = run("--shards", str(digits_shards), "--out", str(run_dir), cwd=tmp_path)
    assert res.returncode == 2 and "already exists; pass --overwrite or --resume" in res.stderr
    assert "Traceback" not in res.stderr and (run_dir / "summary.json").read_text() == "{}"
