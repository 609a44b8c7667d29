"""Fixtures shared by the training tests."""

import time

import psutil
import pytest

# multiprocessing's own helpers, started by the first launch and kept for later ones (train.launcher.rank_context)
HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def children() -> set[int]:
    """This process's descendants, less multiprocessing's fork server and resource tracker themselves (a rank
    forked from the server is still counted)."""
    me = psutil.Process()
    helpers = {p.pid for p in me.children() if any(h in " ".join(p.cmdline()) for h in HELPERS)}
    return {p.pid for p in me.children(recursive=True)} - helpers


def ranks_of(launcher: psutil.Process) -> list[psutil.Process]:
    """The training ranks a launcher started: the children of its fork server."""
    servers = [p for p in launcher.children() if HELPERS[0] in " ".join(p.cmdline())]
    return [rank for server in servers for rank in server.children()]


@pytest.fixture
def no_leftover_processes():
    before = children()
    yield
    deadline = time.time() + 10
    while (left := children() - before) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}"
