"""``manifest.json``: the contract of a shard set. Written last; a reader refuses a folder without one.

Fields (format_version 1): ``format``, ``format_version``, ``created``, ``source`` {uri, fingerprint, rows},
``workers``, ``order``, ``seed``, ``remainder``, ``rows_per_shard``, ``groups``, ``partial_group``,
``columns`` {features, layout, dim, label, schema}, ``label`` {column, num_classes, counts} or null,
``family`` {name, size, params, arrays} or null, ``validation`` {rows, fraction, files}, ``dropped``
{nonfinite_rows, remainder_rows}, ``quality`` {...}, ``shards`` [{index, rows, files: [{path, rows, bytes,
sha256}]}]. Paths are relative to the shard folder, with ``/`` separators.
"""

import hashlib
import json
import os
from pathlib import Path

from storage.errors import ManifestError

FORMAT = "simshard.shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = ("format", "format_version", "workers", "order", "rows_per_shard", "columns", "shards", "validation")


def shard_name(index: int, workers: int) -> str:
    return f"shard-{index:05d}-of-{workers:05d}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (temporary file + rename)."""
    final = Path(folder) / MANIFEST
    tmp = final.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=_json_default))
    os.replace(tmp, final)
    return final


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_manifest(folder: str | Path, *, verify_checksums: bool = False) -> dict:
    """Load and validate a shard set's manifest; check every listed file exists with the recorded size.

    Raises :class:`ManifestError` naming the folder and what is wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{folder} is not a simshard shard set: {MANIFEST} is missing "
                            "(an interrupted build leaves none; rebuild with build_shards --overwrite)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    missing = [k for k in REQUIRED if k not in manifest]
    if manifest.get("format") != FORMAT or missing:
        raise ManifestError(f"{path} is not a simshard manifest (missing {missing or ['format']})")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ManifestError(f"{path} has format_version {manifest['format_version']}; this simshard reads "
                            f"{FORMAT_VERSION}")
    if len(manifest["shards"]) != manifest["workers"]:
        raise ManifestError(f"{path} lists {len(manifest['shards'])} shards for {manifest['workers']} workers")
    for entry in [f for s in manifest["shards"] for f in s["files"]] + manifest["validation"]["files"]:
        file = folder / entry["path"]
        if not file.is_file():
            raise ManifestError(f"{path} lists {entry['path']}, which is missing")
        if file.stat().st_size != entry["bytes"]:
            raise ManifestError(f"{file} has {file.stat().st_size} bytes, the manifest says {entry['bytes']}")
        if verify_checksums and sha256_of(file) != entry["sha256"]:
            raise ManifestError(f"{file} does not match its sha256 in the manifest")
    return manifest
