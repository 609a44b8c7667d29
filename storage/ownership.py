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

from storage import commit, urls
from storage.errors import InputError

RUN_MARKER = "simshard-run.json"
SHARD_SET_TOP = ("shard_stats.png", "bucket_sizes.png")
SHARD_SET_EXTRAS = ("manifest.json", "shard_stats.png", "family/family.json", "family/family.npz")  # format 1
RUN_FILES = (RUN_MARKER, "model.pt", "metrics.parquet", "summary.json", "accuracy.png", "staleness.png",
             "checkpoint.pt", "checkpoint.pt.tmp", "summary.json.tmp")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


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


def foreign_entries(folder: Path, *, kind: str) -> list[str] | None:
    """What in ``folder`` simshard did not make (paths relative to it), or None when ``folder`` is no shard set
    (``kind`` "shards") or run folder ("run") at all. Everything inside simshard's namespaces is its own, so
    only the top level is looked at (and a run's ``logs/``): a mistaken ``--out ~`` is refused at once, not
    after walking the home folder. A format-1 set is listed in full (it is as small as its manifest)."""
    top = sorted(p.name for p in folder.iterdir())
    if kind == "shards":
        legacy = legacy_shard_set_files(folder)
        if legacy is None and not any((folder / name).is_dir() for name in commit.NAMESPACES):
            return None
        foreign = [e for e in top if e not in commit.NAMESPACES and e not in SHARD_SET_TOP]
        if legacy:
            listed_top = {p.split("/", 1)[0] for p in legacy}
            foreign = [e for e in foreign if e not in listed_top]
            foreign += [p for p in _files(folder) if p.split("/", 1)[0] in listed_top - set(SHARD_SET_TOP)
                        and p not in legacy]
        return foreign
    if RUN_MARKER not in top:
        return None
    foreign = [e for e in top if e not in RUN_FILES and e != "logs" and not e.startswith(".rendezvous-")]
    if (folder / "logs").is_dir():
        foreign += [f"logs/{p.name}" for p in sorted((folder / "logs").iterdir()) if p.suffix != ".log"]
    return foreign


def check_replaceable(folder: Path, *, kind: str, flag: str | None = "--overwrite") -> None:
    """Raise :class:`InputError` unless ``folder`` (absent, empty, or of ``kind`` "shards" or "run") holds only
    what simshard made there. ``flag``: the option asking to replace it (None: the folder is only reused)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder; choose another --out")
    top = sorted(p.name for p in folder.iterdir())
    if not top:
        return
    foreign = foreign_entries(folder, kind=kind)
    what = "a shard set" if kind == "shards" else "a run folder"
    if foreign is None:
        if flag is None:
            raise InputError(f"output {folder} already exists and is not {what} simshard made (it holds "
                             f"{top[0]}); choose another --out")
        raise InputError(f"{flag} replaces only {what} simshard made, and {folder} is not one (it holds "
                         f"{top[0]}); choose another --out")
    if foreign:
        raise InputError(f"{flag or 'the build'} refuses {folder}: it holds {foreign[0]}, which simshard did not "
                         f"make ({len(foreign)} such entr{'y' if len(foreign) == 1 else 'ies'}); move it away or "
                         "choose another --out")


def check_apart(output: Path, other: Path, *, output_flag: str, other_flag: str) -> None:
    """``output`` must not equal, contain or sit inside ``other`` (both resolved; object-store paths compared as
    URLs)."""
    if urls.is_remote(output) or urls.is_remote(other):
        a, b = str(output).rstrip("/") + "/", str(other).rstrip("/") + "/"
        same, inside, contains = a == b, a.startswith(b), b.startswith(a)
    else:
        a, b = output.resolve(), other.resolve()
        same, inside, contains = a == b, a.is_relative_to(b), b.is_relative_to(a)
    if same or inside or contains:
        relation = "is" if same else "contains" if contains else "is inside"
        raise InputError(f"{output_flag} {output} {relation} {other_flag} {other}; choose an {output_flag} apart "
                         f"from it")
