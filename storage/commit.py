"""How a build publishes a shard set without rename, safely under concurrency (the table formats' way).

Layout of an output folder ``OUT``::

    OUT/data/<build_id>/...          every file of one build, under a prefix no other build uses
    OUT/_leases/<build_id>.json      the build's lease while it runs: host, pid, start time
    OUT/_manifests/00000001.json     the commit points, written create-only, one per committed build

A build notes the newest committed version when it starts and commits the next one with an exclusive create
(``O_CREAT | O_EXCL``; an ``If-None-Match: *`` put on object stores). If another build committed that version
first, the create fails and the build ends saying the output is taken: of two concurrent builds exactly one
commits. Readers take the highest version; it lists only files under its own build's prefix, which are
complete before it is written, so a reader sees either the previous complete set or the new one.

Clean-up (:func:`collect`): a prefix that neither of the two newest manifests lists and whose build holds no
live lease is what a killed or superseded build left; a later build removes it. A lease is live while its
process runs (same host: the pid exists and started before the lease), or for ``FOREIGN_LEASE_S`` when it was
taken on another host. The previous version's files are kept so that a reader that opened it just before a
commit can finish.
"""

import dataclasses
import datetime
import json
import os
import socket
from pathlib import Path

import psutil

from storage import urls
from storage.errors import SimshardError

MANIFESTS, DATA, LEASES = "_manifests", "data", "_leases"
NAMESPACES = (MANIFESTS, DATA, LEASES)
KEEP_VERSIONS = 2
FOREIGN_LEASE_S = 24 * 3600


class OutputTaken(SimshardError):
    """Another build committed to the same output first."""


def versions(folder: Path) -> list[int]:
    """Committed manifest versions in ``folder``, ascending."""
    folder = urls.folder(folder)
    urls.refresh(folder)
    found = []
    for path in (folder / MANIFESTS).glob("*.json"):
        if path.stem.isdigit():
            found.append(int(path.stem))
    return sorted(found)


def manifest_path(folder: Path, version: int) -> Path:
    return urls.folder(folder) / MANIFESTS / f"{version:08d}.json"


def current(folder: Path) -> Path | None:
    """The newest committed manifest, or None."""
    found = versions(folder)
    return manifest_path(folder, found[-1]) if found else None


def prefix(build_id: str) -> str:
    """The data prefix of a build, relative to the output folder."""
    return f"{DATA}/{build_id}"


def create_only(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (then False), atomically against other writers:
    ``O_CREAT | O_EXCL`` on a local disk, a put with ``If-None-Match: *`` on an object store (s3fs's "x"
    mode; the store answers 412 when the key exists)."""
    if urls.is_remote(path):
        try:
            with path.open("xb") as fh:
                fh.write(text.encode())
        except FileExistsError:
            return False
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def commit(folder: Path, text: str, *, base: int) -> int:
    """Create version ``base + 1`` holding ``text``, exclusively; raise :class:`OutputTaken` if it exists."""
    version = base + 1
    if not create_only(manifest_path(folder, version), text):
        raise OutputTaken(f"output {folder} is taken: another build committed version {version} first; "
                          "nothing of this build was published")
    return version


@dataclasses.dataclass(frozen=True)
class Lease:
    build_id: str
    host: str
    pid: int
    started: str  # ISO time, UTC

    def live(self) -> bool:
        age = (datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(self.started)).total_seconds()
        if self.host != socket.gethostname():
            return age < FOREIGN_LEASE_S
        try:
            proc = psutil.Process(self.pid)
            return proc.is_running() and proc.create_time() <= datetime.datetime.fromisoformat(
                self.started).timestamp() + 1
        except psutil.NoSuchProcess:
            return False


def take_lease(folder: Path, build_id: str) -> Lease:
    lease = Lease(build_id, socket.gethostname(), os.getpid(),
                  datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    path = urls.folder(folder) / LEASES / f"{build_id}.json"
    for attempt in range(3):  # another build may remove the empty folder between our mkdir and write
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.write_text(json.dumps(dataclasses.asdict(lease)))
            return lease
        except FileNotFoundError:
            if attempt == 2:
                raise
    return lease


def drop_lease(folder: Path, build_id: str) -> None:
    leases = urls.folder(folder) / LEASES
    (leases / f"{build_id}.json").unlink(missing_ok=True)
    if urls.is_remote(leases):  # an object store has no empty folders
        return
    try:
        leases.rmdir()  # only when no other build holds a lease
    except OSError:
        pass


def _lease(folder: Path, build_id: str) -> Lease | None:
    try:
        return Lease(**json.loads((urls.folder(folder) / LEASES / f"{build_id}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def committed_prefixes(folder: Path) -> set[str]:
    """The build ids of the committed versions kept in ``folder`` (the newest ``KEEP_VERSIONS``)."""
    keep = set()
    for version in versions(folder)[-KEEP_VERSIONS:]:
        try:
            keep.add(json.loads(manifest_path(folder, version).read_text())["build_id"])
        except (OSError, ValueError, KeyError):
            continue
    return keep


def collect(folder: Path, *, claimed=lambda prefix: False) -> list[str]:
    """Remove the prefixes (and leases) of builds that are neither committed among the newest versions nor
    alive; returns the build ids removed. Old manifest versions beyond the newest ``KEEP_VERSIONS`` go too.
    ``claimed(prefix)``: True for a prefix a live build has claimed to resume (:mod:`storage.resume`)."""
    folder = urls.folder(folder)
    urls.refresh(folder)
    keep = committed_prefixes(folder)
    removed = []
    for path in sorted((folder / DATA).glob("*")):
        lease = _lease(folder, path.name)
        if lease is not None and lease.live() or claimed(path):
            continue
        if path.name in keep:  # committed; its build died before dropping its lease
            drop_lease(folder, path.name)
            continue
        urls.remove_tree(path)
        drop_lease(folder, path.name)
        removed.append(path.name)
    for path in (folder / LEASES).glob("*.json"):  # a lease whose build died before writing any data
        lease = _lease(folder, path.stem)
        if path.stem not in keep and not (folder / DATA / path.stem).exists() and not (lease and lease.live()):
            path.unlink(missing_ok=True)
    for version in versions(folder)[:-KEEP_VERSIONS]:
        manifest_path(folder, version).unlink(missing_ok=True)
    return removed
