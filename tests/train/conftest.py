"""Fixtures shared by the training tests."""

import time

import psutil
import pytest


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
def no_leftover_processes():
    before = children()
    yield
    deadline = time.time() + 10
    while (left := children() - before) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}"
