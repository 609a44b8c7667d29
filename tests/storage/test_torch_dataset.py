"""AlignedShards: simshard's aligned stream for any PyTorch trainer, with a plain DataLoader."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from storage.errors import InputError
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
