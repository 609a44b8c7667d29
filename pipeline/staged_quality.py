"""The quality of a staged shard set, measured through the reader users get (:class:`storage.shardset.ShardSet`).

- ``group_tightness``: the first ``HEAD_ROWS`` rows of every shard (row k of each shard is group k) against
  the build's sample (:func:`pipeline.quality.group_tightness`);
- ``label_distance``: each shard's label distribution against the whole's, from the counts its writers kept,
  or read back from the files where a part file carries none (one written by an older, killed run).
"""

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline import quality
from pipeline.write import WrittenFile
from storage.dataset import features_of
from storage.shardset import ShardSet

HEAD_ROWS = 512


def shard_quality(shards: ShardSet, *, sample: np.ndarray, seed: int, files: Sequence[WrittenFile],
                  num_classes: int | None) -> dict[str, float]:
    """``group_tightness`` of the shards' heads; ``label_distance`` too when ``num_classes`` is given."""
    heads = [_features(next(shards.iter_batches(shards.shard_files(i), batch_rows=HEAD_ROWS), None), shards)
             for i in range(shards.workers)]
    out = {"group_tightness": quality.group_tightness(heads, sample, seed=seed)}
    if num_classes is not None:
        out["label_distance"] = quality.label_distance(shard_label_counts(shards, files), num_classes=num_classes)
    return out


def shard_label_counts(shards: ShardSet, files: Sequence[WrittenFile]) -> list[np.ndarray]:
    """Each shard's label bincount (int64): the sum of its part files' counts, or read back from its files."""
    counts = []
    for i in range(shards.workers):
        mine = [f for f in files if f.target.kind == "shard" and f.target.index == i]
        if all(f.label_counts is not None for f in mine):
            width = max([len(f.label_counts) for f in mine] + [0])
            counts.append(sum((np.pad(f.label_counts, (0, width - len(f.label_counts))) for f in mine),
                              np.zeros(width, np.int64)))
        else:
            labels = np.concatenate([b.column(shards.spec.label).to_numpy() for b in
                                     shards.iter_batches(shards.shard_files(i), columns=[shards.spec.label])])
            counts.append(np.bincount(labels))
    return counts


def _features(batch: pa.RecordBatch | None, shards: ShardSet) -> np.ndarray:
    """A batch's (rows, dim) float32 features; (0, dim) for a shard with no rows."""
    if batch is None:
        return np.zeros((0, shards.spec.dim), np.float32)
    return features_of(pa.Table.from_batches([batch]), shards.spec)
