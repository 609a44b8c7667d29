"""The command-line contract of train.simulate and train.node, run as subprocesses."""

from tests.cli_helpers import assert_one_error_line, run_module, run_modules


def test_simulate_bad_input_is_one_line(digits_shards, tmp_path):
    fifo, empty, module = run_modules(
        ("train.simulate", "--shards", digits_shards, "--out", tmp_path / "run", "--schedule", "fifo"),
        ("train.simulate", "--shards", tmp_path, "--out", tmp_path / "run"),
        ("train.simulate", "--shards", digits_shards, "--out", tmp_path / "run", "--model", "nosuchmod:f"),
        cwd=tmp_path)
    assert_one_error_line(fifo, "--schedule", "invalid choice: 'fifo'")
    assert_one_error_line(empty, "has no committed manifest")
    assert_one_error_line(module, "cannot import module 'nosuchmod'")


def test_node_bad_input_is_one_line(digits_shards, tmp_path):
    res = run_module("train.node", "--shards", digits_shards, "--out", tmp_path / "run", cwd=tmp_path)
    assert_one_error_line(res, "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")
    env = {"RANK": "0", "WORLD_SIZE": "9", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}
    res = run_module("train.node", "--shards", digits_shards, "--out", tmp_path / "run", cwd=tmp_path, env=env)
    assert_one_error_line(res, "WORLD_SIZE=9", "4 workers")


def test_simulate_runs_and_prints_one_summary_line(digits_shards, tmp_path):
    res = run_module("train.simulate", "--shards", digits_shards, "--out", tmp_path / "run", "--epochs", "3",
                     cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "simulated agn with 4 workers (round-robin)" in res.stdout
