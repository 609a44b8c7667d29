"""What simshard may replace: only folders it made, and never an input.

``--overwrite`` replaces a folder only when it is empty or when everything in it is something simshard wrote
there: a shard set's namespaces (``data/``, ``_manifests/``, ``_leases/``: :mod:`storage.commit`) and its
``shard_stats.png`` (or a format-1 set's manifest.json and the files it lists), or a run folder's marker and
outputs. A folder holding anything else is refused with one line that names a file simshard did not make.
Outputs and inputs never overlap: a build's output never equals, contains or sits inside its source, and a
run folder never does so with its shard set.
"""

import json
from pathlib import Path

from storage import commit
from storage.errors import InputError

RUN_MARKER = "simshard-run.json"
SHARD_SET_TOP = ("shard_stats.png",)
SHARD_SET_EXTRAS = ("manifest.json", "shard_stats.png", "family/family.json", "family/family.npz")  # format 1
RUN_FILES = (RUN_MARKER, "model.pt", "metrics.parquet", "summary.json", "accuracy.png", "staleness.png",
             "checkpoint.pt", "checkpoint.pt.tmp", "summary.json.tmp")
RUN_GLOBS = ("logs/*.log", ".rendezvous-*")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def shard_set_files(folder: Path) -> set[str] | None:
    """The files of simshard's in ``folder``: everything in its namespaces plus its plot; for a format-1 set,
    the files its manifest lists. None when ``folder`` holds neither."""
    ours = [p for p in _files(folder) if p.split("/", 1)[0] in commit.NAMESPACES or p in SHARD_SET_TOP]
    legacy = legacy_shard_set_files(folder)
    if ours or any((folder / name).is_dir() for name in commit.NAMESPACES):
        return set(ours) | (legacy or set())
    return legacy


def remove_legacy(folder: Path) -> None:
    """Remove a format-1 set's files (its manifest.json and what it lists) once a newer build has committed."""
    legacy = legacy_shard_set_files(folder)
    if not legacy:
        return
    for name in sorted(legacy, key=lambda p: p != "manifest.json"):  # the manifest first: no half-listed set
        (folder / name).unlink(missing_ok=True)
    for parent in sorted({(folder / n).parent for n in legacy}, key=lambda p: -len(p.parts)):
        if parent != folder and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def legacy_shard_set_files(folder: Path) -> set[str] | None:
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


def check_replaceable(folder: Path, *, kind: str, flag: str | None = "--overwrite") -> None:
    """Raise :class:`InputError` unless ``folder`` (absent, empty, or of ``kind`` "shards" or "run") holds only
    what simshard made there. ``flag``: the option asking to replace it (None: the folder is only reused)."""
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
        if flag is None:
            raise InputError(f"output {folder} already exists and is not {what} simshard made (it holds "
                             f"{present[0] if present else 'folders'}); choose another --out")
        raise InputError(f"{flag} replaces only {what} simshard made, and {folder} is not one (it holds "
                         f"{present[0] if present else 'folders'}); choose another --out")
    foreign = [p for p in present if p not in made]
    if foreign:
        raise InputError(f"{flag or 'the build'} refuses {folder}: it holds {foreign[0]}, which simshard did not "
                         f"make ({len(foreign)} such file(s)); move it away or choose another --out")


def check_apart(output: Path, other: Path, *, output_flag: str, other_flag: str) -> None:
    """``output`` must not equal, contain or sit inside ``other`` (both resolved)."""
    a, b = output.resolve(), other.resolve()
    if a == b or b.is_relative_to(a) or a.is_relative_to(b):
        relation = "is" if a == b else "contains" if b.is_relative_to(a) else "is inside"
        raise InputError(f"{output_flag} {output} {relation} {other_flag} {other}; choose an {output_flag} apart "
                         f"from it")
