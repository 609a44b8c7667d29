"""What simshard may replace: only folders it made, and never an input.

``--overwrite`` replaces a folder only when it is empty or when everything in it is something simshard wrote
there: a shard set's manifest and the files it lists (plus the build's own extras), or a run folder's marker
and outputs. A folder holding anything else is refused with one line that names a file simshard did not make.
Outputs and inputs never overlap: a build's output never equals, contains or sits inside its source, and a
run folder never does so with its shard set.
"""

import json
from pathlib import Path

from storage.errors import InputError

RUN_MARKER = "simshard-run.json"
SHARD_SET_EXTRAS = ("manifest.json", "shard_stats.png", "family/family.json", "family/family.npz")
RUN_FILES = (RUN_MARKER, "model.pt", "metrics.parquet", "summary.json", "accuracy.png", "staleness.png",
             "checkpoint.pt", "checkpoint.pt.tmp", "summary.json.tmp")
RUN_GLOBS = ("logs/*.log", ".rendezvous-*")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def shard_set_files(folder: Path) -> set[str] | None:
    """The files a simshard shard set in ``folder`` consists of, or None when it has no simshard manifest."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != "simshard.shards":
        return None
    listed = [f.get("path") for s in manifest.get("shards", []) for f in s.get("files", [])]
    listed += [f.get("path") for f in manifest.get("validation", {}).get("files", [])]
    return {p for p in listed if isinstance(p, str)} | set(SHARD_SET_EXTRAS)


def run_folder_files(folder: Path) -> set[str] | None:
    """The files of a simshard run folder, or None when ``folder`` has no run marker."""
    if not (folder / RUN_MARKER).is_file():
        return None
    made = {f for f in RUN_FILES if (folder / f).exists()}
    for pattern in RUN_GLOBS:
        made |= {p.relative_to(folder).as_posix() for p in folder.glob(pattern)}
    return made


def check_replaceable(folder: Path, *, kind: str) -> None:
    """Raise :class:`InputError` unless ``folder`` (absent, empty, or of ``kind`` "shards" or "run") holds only
    what simshard made there."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder; choose another --out")
    present = _files(folder)
    if not present and not any(folder.iterdir()):
        return
    made = shard_set_files(folder) if kind == "shards" else run_folder_files(folder)
    what = "a shard set" if kind == "shards" else "a run folder"
    if made is None:
        raise InputError(f"--overwrite replaces only {what} simshard made, and {folder} is not one (it holds "
                         f"{present[0] if present else 'folders'}); choose another --out")
    foreign = [p for p in present if p not in made]
    if foreign:
        raise InputError(f"--overwrite refuses {folder}: it holds {foreign[0]}, which simshard did not make "
                         f"({len(foreign)} such file(s)); move it away or choose another --out")


def check_apart(output: Path, other: Path, *, output_flag: str, other_flag: str) -> None:
    """``output`` must not equal, contain or sit inside ``other`` (both resolved)."""
    a, b = output.resolve(), other.resolve()
    if a == b or b.is_relative_to(a) or a.is_relative_to(b):
        relation = "is" if a == b else "contains" if b.is_relative_to(a) else "is inside"
        raise InputError(f"{output_flag} {output} {relation} {other_flag} {other}; choose an {output_flag} apart "
                         f"from it")
