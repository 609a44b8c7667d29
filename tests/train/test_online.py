"""Online coordination (train --index): the coordinator against a real index, the simulator, and real RPC
processes on 127.0.0.1."""

import numpy as np
import pandas as pd
import pytest

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage.coordinator import Coordinator
from storage.errors import TrainError
from storage.index import BucketIndex
from storage.shardset import ShardSet
from tests.train.test_rpc_training import BARS, KillWhen
from train.config import TrainConfig
from train.launcher import launch
from train.simulate import simulate


def sim(index, out, **kw):
    kw.setdefault("epochs", 3)
    schedule = kw.pop("schedule", "round-robin")
    summary = simulate(TrainConfig(index=str(index), out=str(out), **kw), schedule=schedule, plots=False)
    return summary, pd.read_parquet(out / "metrics.parquet")


@pytest.mark.parametrize("workers", [2, 4, 7])
def test_every_training_row_is_used_exactly_once_per_epoch(workers, digits_index):
    index = ShardSet(digits_index)
    reader = BucketIndex(index, cache_bytes=1 << 24, seed=5)
    coord = Coordinator(bucket_rows=index.manifest.buckets.rows, workers=workers, batch_size=32, seed=5)
    speeds = np.random.default_rng(workers).integers(1, 4, workers)  # uneven: a fast worker takes more steps
    for epoch in range(2):
        used, step, live = [], [0] * workers, set(range(workers))
        while live:
            for k in sorted(live):
                drawn = coord.draw(k, epoch, step[k], int(speeds[k]))
                step[k] += len(drawn)
                for takes in drawn:
                    used.append(reader.read(reader.positions(epoch, takes))[2])
                if len(drawn) < speeds[k]:
                    live.discard(k)
        rows = np.concatenate(used)
        assert len(rows) == len(np.unique(rows)) == index.manifest.rows_per_shard[0]
        assert set(rows.tolist()) == set(index.read_shard(0)[2].tolist())
    assert not coord.pools, "finished epochs keep no state"


def test_followers_draw_from_the_leaders_buckets(digits_index):
    rows = ShardSet(digits_index).manifest.buckets.rows
    coord = Coordinator(bucket_rows=rows, workers=3, batch_size=16, seed=0)
    (lead,), (follow,) = coord.draw(0, 0, 0), coord.draw(1, 0, 0)
    assert sum(c for _, _, c in lead) == 16 and [(b, c) for b, _, c in lead] == [(b, c) for b, _, c in follow]
    assert all(o2 == o1 + c for (_, o1, c), (_, o2, _) in zip(lead, follow)), "the follower takes other rows"


def test_simulator_is_deterministic_and_aligned(digits_index, tmp_path, dask_address):
    a, ma = sim(digits_index, tmp_path / "a", schedule="random", seed=3)
    _, mb = sim(digits_index, tmp_path / "b", schedule="random", seed=3)
    _, mc = sim(digits_index, tmp_path / "c", schedule="random", seed=4)
    pd.testing.assert_frame_equal(ma, mb)
    assert not ma[["staleness", "accuracy"]].equals(mc[["staleness", "accuracy"]])
    assert a["unseen_rows"] == 0 and ma[ma.worker >= 0].epoch.max() == pytest.approx(3)
    steps = ma[ma.worker == -3]
    assert len(steps) > 3 and (steps.distinct_buckets >= 1).all() and (steps.spills >= 0).all()
    assert steps.step_tightness.notna().mean() > 0.8  # not where only the leader found rows (an epoch's end)
    # random shards are the baseline: the same measure is about 1 there
    random = tmp_path / "random"
    build_shards(BuildConfig(out=str(random), dask_address=dask_address, workers=4, order="random"))
    r = simulate(TrainConfig(shards=str(random), out=str(tmp_path / "r"), epochs=1), plots=False)
    assert a["step_tightness"] < 0.85 < r["step_tightness"], (a["step_tightness"], r["step_tightness"])
    presplit_steps = pd.read_parquet(tmp_path / "r" / "metrics.parquet").query("worker == -3")
    assert len(presplit_steps) > 3 and presplit_steps.step_tightness.notna().all()


def test_an_index_larger_than_the_cache_trains_the_same(blob_index, tmp_path):
    rows = ShardSet(blob_index).manifest.rows_per_shard[0]
    assert rows * 16 * 4 > 4 * 0.25 * 2**20, "the index must be several times the cache"
    small, m_small = sim(blob_index, tmp_path / "small", workers=3, epochs=1, cache_mb=0.25, eval_every=20)
    ample, m_ample = sim(blob_index, tmp_path / "ample", workers=3, epochs=1, eval_every=20)
    pd.testing.assert_frame_equal(m_small.drop(columns="time"), m_ample.drop(columns="time"))
    assert small["final_accuracy"] > 0.7 and small["unseen_rows"] == 0
    assert small["cache_hit_rate"] < 0.5 < ample["cache_hit_rate"]


def test_four_rpc_workers_on_digits_reach_the_agn_bar(digits_index, tmp_path, no_leftover_processes):
    summary = launch(TrainConfig(index=str(digits_index), out=str(tmp_path / "agn"), workers=4, epochs=10))
    assert summary["best_accuracy"] >= BARS["agn"] and summary["final_accuracy"] >= BARS["agn"] - 0.1, summary
    assert summary["unseen_rows"] == 0 and summary["step_tightness"] < 0.85
    assert summary["cache_hit_rate"] > 0.9


def test_a_killed_worker_releases_its_claims(blob_index, tmp_path, no_leftover_processes):
    kill = KillWhen("worker1", epoch=1.0)
    config = TrainConfig(index=str(blob_index), out=str(tmp_path / "kill"), workers=3, epochs=3, eval_every=20)
    summary = launch(config, on_started=kill.started, on_progress=kill.progress)
    assert kill.killed_at is not None and summary["dead_workers"] == [1]
    # the survivors use the rest of every epoch; only what worker 1 drew and never committed is unseen
    assert 0 <= summary["unseen_rows"] <= 2 * summary["window"] * config.batch_size, summary
    assert summary["final_accuracy"] > 0.7


def test_a_killed_parameter_server_and_its_coordinator_stop_the_workers(blob_index, tmp_path, no_leftover_processes):
    """The coordinator lives in the parameter server: killing it stops every worker with one clear error."""
    kill = KillWhen("ps", epoch=0.5)
    with pytest.raises(TrainError, match=r"parameter server exited with code -9; workers stopped "
                                         r"\(worker 0: 1, worker 1: 1, worker 2: 1\)"):
        launch(TrainConfig(index=str(blob_index), out=str(tmp_path / "run"), workers=3, epochs=200, eval_every=20),
               on_started=kill.started, on_progress=kill.progress)
    assert kill.killed_at is not None


@pytest.mark.parametrize("optimizer", list(BARS))
def test_every_optimizer_trains_online_unchanged(optimizer, digits_index, tmp_path):
    summary, df = sim(digits_index, tmp_path / optimizer, optimizer=optimizer, epochs=6)
    assert summary["unseen_rows"] == 0 and df[df.worker >= -1].epoch.max() == pytest.approx(6)
    assert summary["best_accuracy"] >= BARS[optimizer] - 0.05, summary
