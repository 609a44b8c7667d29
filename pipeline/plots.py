"""PNG plots of shard statistics (matplotlib, headless; imported when a plot is made: pyplot costs a third of
a second to import)."""

import io
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shard_stats_png(manifest, path: Path) -> Path:
    """Rows per shard and each shard's label-distribution distance from the whole."""
    plt = pyplot()
    q = manifest.quality
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    shards = range(manifest.workers)
    axes[0].bar(shards, manifest.rows_per_shard, color="tab:blue")
    axes[0].set(title="rows per shard", xlabel="shard")
    if q.get("label_distance"):
        axes[1].bar(shards, q["label_distance"], color="tab:orange")
    axes[1].set(title="label distance from the whole (TV)", xlabel="shard")
    tight = q.get("group_tightness")
    fig.suptitle(f"{manifest.order} / {manifest.family.name if manifest.family else '-'}: group tightness "
                 f"{tight:.3f}" if tight is not None else manifest.order)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: Path) -> None:
    """PNG bytes written in one call: ``path`` may be on an object store."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    path.write_bytes(buffer.getvalue())


def bucket_sizes_png(manifest, path: Path) -> Path:
    """An index's rows per bucket, buckets in locality order."""
    plt = pyplot()
    rows = manifest.buckets.rows
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(len(rows)), rows, width=1.0, color="tab:blue")
    ax.set(title=f"rows per bucket ({len(rows)} buckets, {manifest.family.name})", xlabel="bucket (locality order)",
           ylabel="rows")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
