"""ShardStream keeps row k of every shard at the same step in every epoch, whatever the row-group layout."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage.shardset import ShardSet
from tests.conftest import mixture, write_parquet
from train.data import ShardStream


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory, dask_address):
    """Shards of 17, 17, 17 and 16 rows in row groups of 8: the smallest shard ends on a row-group boundary,
    so each longer shard's extra row is a row group of its own (the layout that broke alignment)."""
    tmp = tmp_path_factory.mktemp("uneven")
    x, y = mixture(67, dim=4)
    src = write_parquet(tmp / "src.parquet", x, y)
    out = tmp / "shards"
    build_shards(BuildConfig(source=str(src), out=str(out), workers=4, family="pca", validation_fraction=0.0,
                             row_group_rows=8, dask_address=dask_address))
    return ShardSet(out)


def positions(stream: ShardStream, epoch: int) -> np.ndarray:
    """The shard positions in the order epoch ``epoch`` visits them."""
    return np.concatenate([stream.blocks[b][2] + perm for b, perm in stream.epoch_order(epoch)])


def test_the_fixture_has_the_breaking_layout(uneven_shards):
    assert uneven_shards.manifest.rows_per_shard == [17, 17, 17, 16]
    groups = [pq.ParquetFile(uneven_shards.shard_files(i)[0]).metadata.num_row_groups for i in range(4)]
    assert groups == [3, 3, 3, 2]


@pytest.mark.parametrize("epoch", range(4))
def test_row_k_of_every_shard_meets_at_the_same_step(uneven_shards, epoch):
    streams = [ShardStream(uneven_shards, i, batch_size=4, seed=3) for i in range(4)]
    orders = [positions(s, epoch) for s in streams]
    common = min(uneven_shards.manifest.rows_per_shard)
    for order in orders[1:]:
        np.testing.assert_array_equal(order[:common], orders[0][:common])
    assert all(sorted(o) == list(range(len(o))) for o in orders)  # every row once per epoch
    assert all(o[-1] == 16 for o in orders[:3])  # the extra row comes last
    assert not np.array_equal(positions(streams[0], epoch), positions(streams[0], epoch + 1))


def test_batches_pair_the_same_groups(uneven_shards):
    """Row k of shard i comes from group k: the source rows met at each step are one group's members."""
    streams = [ShardStream(uneven_shards, i, batch_size=4, seed=0) for i in range(4)]
    firsts = [[b[0].numpy() for b in s.batches(epoch=1)][:4] for s in streams]
    tables = [pq.read_table(uneven_shards.shard_files(i)[0]) for i in range(4)]
    for step in range(4):
        # the position of each batch row in its shard, found through its features (all distinct)
        pos = [[int(np.flatnonzero((np.stack([tables[i].column(c).to_numpy() for c in ("c0", "c1", "c2", "c3")],
                                             1) == row).all(1))[0]) for row in firsts[i][step]] for i in range(4)]
        assert all(p == pos[0] for p in pos)
