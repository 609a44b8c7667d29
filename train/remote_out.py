"""A run folder on an object store: training writes a local working copy, which is mirrored to ``--out`` when
the run ends.

The ranks write their logs, metrics and checkpoints as files, and the local launcher's rendezvous is a file,
so they work in a local temporary folder. When the run ends (finished, failed or interrupted) every file of
it is uploaded, ``summary.json`` last: a run folder on the store whose ``summary.json`` exists is complete.
``--resume`` first downloads the folder (its checkpoint) into the working copy. Before any work the remote
folder gets the checks a local one gets: an existing run needs ``--resume`` or ``--overwrite``, and
``--overwrite`` replaces only a run folder simshard made.

A killed launcher uploads nothing (its working copy stays in the temporary folder); start it again with
``--resume`` from a checkpoint that reached the store in an earlier run, or afresh.
"""

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from storage import urls
from storage.errors import InputError
from storage.ownership import RUN_MARKER, check_apart, check_replaceable
from train.config import TrainConfig

log = logging.getLogger("simshard.train")
LAST = "summary.json"


def _check(remote: Path, config: TrainConfig) -> None:
    data = urls.folder(config.data, storage_options=config.storage_options)
    check_apart(remote, data, output_flag="--out", other_flag="--index" if config.index else "--shards")
    if not remote.exists() or not any(remote.iterdir()):
        return
    if not (config.resume or config.overwrite):
        raise InputError(f"run folder {remote} already exists; pass --overwrite or --resume")
    if config.overwrite and not config.resume:
        check_replaceable(remote, kind="run")
    if config.resume and not (remote / RUN_MARKER).exists():
        raise InputError(f"--resume: {remote} is not a run folder simshard made; choose another --out")


def _upload(local: Path, remote: Path) -> None:
    count = urls.upload_tree(local, remote, last=LAST)  # the summary last: it marks the run complete
    log.info("run folder uploaded to %s (%d files)", remote, count)


@contextlib.contextmanager
def local_run(config: TrainConfig) -> Iterator[TrainConfig]:
    """``config`` itself for a local ``--out``; for a URL, ``config`` with ``out`` a local working copy, which
    is uploaded to the URL when the block ends (see the module doc)."""
    if not urls.is_url(config.out):
        yield config
        return
    remote = urls.folder(config.out, storage_options=config.storage_options)
    _check(remote, config)
    with tempfile.TemporaryDirectory(prefix="simshard-run-") as tmp:
        local = Path(tmp) / "run"
        local.mkdir()
        if config.resume and remote.exists():
            for path in remote.rglob("*"):
                if path.is_file():
                    target = local / path.relative_to(remote).as_posix()
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(path.read_bytes())
        if config.overwrite and not config.resume and remote.exists():
            urls.remove_tree(remote)  # a run folder simshard made (checked above)
        try:
            yield config.model_copy(update={"out": str(local)})
        finally:
            _upload(local, remote)
