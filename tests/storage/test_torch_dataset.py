"""AlignedShards: simshard's aligned stream for any PyTorch trainer, with a plain DataLoader."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from storage.errors import InputError
from storage.index import BucketIndex
from storage.shardset import ShardSet
from storage.torch_dataset import AlignedShards
from train.data import ShardStream

B = 32


def batches(dataset, **loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(DataLoader(dataset, batch_size=None, **loader))


def test_each_rank_sees_the_stream_simshards_workers_train_on(digits_shards):
    shards = ShardSet(digits_shards)
    for rank in range(2):
        mine = batches(AlignedShards(digits_shards, batch_size=B, rank=rank, world_size=2, seed=3, epoch=1))
        theirs = list(ShardStream(shards, rank, batch_size=B, seed=3).batches(1))
        assert len(mine) == len(theirs)
        for (x, y), (tx, ty) in zip(mine, theirs, strict=True):
            assert torch.equal(x, tx) and torch.equal(y, ty) and y.dtype == torch.int64


def test_two_ranks_are_aligned_row_for_row(digits_shards):
    """Row k of shard i is from group k: the rows two ranks see at each step sit at the same shard position."""
    shards = ShardSet(digits_shards)
    positions = []
    for rank in range(2):
        table = pq.read_table(shards.shard_files(rank)[0])
        x = np.stack([table.column(c).to_numpy() for c in shards.spec.columns], 1)
        where = {row.tobytes(): i for i, row in enumerate(x)}
        rows = torch.cat([b[0] for b in batches(AlignedShards(digits_shards, batch_size=B, rank=rank,
                                                               world_size=2))]).numpy()
        positions.append([where[row.tobytes()] for row in rows])
    common = min(shards.manifest.rows_per_shard[:2])
    assert positions[0][:common] == positions[1][:common] and sorted(positions[0]) == list(range(len(positions[0])))


def test_resuming_after_seven_batches_yields_exactly_the_rest(digits_shards):
    full = batches(AlignedShards(digits_shards, batch_size=B, rank=1, world_size=4))
    first = AlignedShards(digits_shards, batch_size=B, rank=1, world_size=4)
    loader = iter(DataLoader(first, batch_size=None))
    for _ in range(7):
        next(loader)
    state = first.state_dict()
    assert state == {"epoch": 0, "sample": 7 * B, "seed": 0}
    again = AlignedShards(digits_shards, batch_size=B, rank=1, world_size=4)
    again.load_state_dict(state)
    rest = batches(again)
    assert len(rest) == len(full) - 7
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, full[7:], strict=True))


def test_dataloader_workers_keep_the_order(digits_shards):
    alone = batches(AlignedShards(digits_shards, batch_size=B, rank=2, world_size=4, seed=5))
    # spawn: this test process runs Prefect's and Dask's threads, which a forked worker must not inherit
    pooled = batches(AlignedShards(digits_shards, batch_size=B, rank=2, world_size=4, seed=5), num_workers=2,
                     multiprocessing_context="spawn")
    assert len(alone) == len(pooled)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(alone, pooled, strict=True))


def test_epochs_reshuffle_and_rank_comes_from_torchrun(digits_shards, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    dataset = AlignedShards(digits_shards, batch_size=B)
    assert dataset.rank == 3 and len(dataset) == ShardSet(digits_shards).manifest.rows_per_shard[3]
    epoch0, epoch1 = batches(dataset), batches(dataset)  # the second pass is epoch 1
    assert not torch.equal(epoch0[0][0], epoch1[0][0])
    with pytest.raises(InputError, match="world size 5 is more than the 4 shards"):
        AlignedShards(digits_shards, batch_size=B, rank=0, world_size=5)


def test_an_index_serves_ranks_that_share_buckets_and_never_a_row_twice(digits_index):
    """Online coordination replayed in every rank: each step, rank 1 follows rank 0's buckets; no row is served
    twice in an epoch, and at most world x batch - 1 rows of it go unused."""
    ranks = [AlignedShards(digits_index, batch_size=B, rank=r, world_size=3, seed=2, epoch=1) for r in range(3)]
    streams = [batches(d) for d in ranks]
    assert len({len(s) for s in streams}) == 1 and len(streams[0]) == len(ranks[0]) // B  # DDP: equal steps
    index = BucketIndex(ranks[0].shards, cache_bytes=2**24, seed=2)
    positions = [np.concatenate([index.positions(1, t) for t in d._steps(1)]) for d in ranks]
    every = np.concatenate(positions)
    train_rows = ranks[0].shards.manifest.rows_per_shard[0]
    assert len(np.unique(every)) == len(every) > train_rows - 3 * B
    bucket_of = np.searchsorted(index.bucket_start, every, side="right") - 1
    per_rank = bucket_of.reshape(3, -1)
    assert (per_rank[0] == per_rank[1]).mean() > 0.9, "the followers did not take the leader's buckets"
    x, _, _ = index.read(positions[1][:B])
    assert torch.equal(streams[1][0][0], torch.from_numpy(x))


def test_an_index_resumes_and_keeps_its_order_with_dataloader_workers(digits_index):
    full = batches(AlignedShards(digits_index, batch_size=B, rank=1, world_size=2))
    pooled = batches(AlignedShards(digits_index, batch_size=B, rank=1, world_size=2), num_workers=2,
                     multiprocessing_context="spawn")
    assert len(full) == len(pooled) and all(torch.equal(a[0], b[0]) for a, b in zip(full, pooled, strict=True))
    again = AlignedShards(digits_index, batch_size=B, rank=1, world_size=2)
    again.load_state_dict({"epoch": 0, "sample": 7 * B, "seed": 0})
    rest = batches(again)
    assert len(rest) == len(full) - 7 and all(torch.equal(a[0], b[0]) for a, b in zip(rest, full[7:], strict=True))
