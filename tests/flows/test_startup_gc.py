"""A flow CLI imports with garbage collection paused, and runs its flow with it on again."""

import gc
import json
import os
import subprocess
import sys

from flows import startup_gc

# a fresh interpreter whose command line reads as `python -m flows.build_shards` (no server: PREFECT_API_URL)
PROBE = """
import gc, json, sys
sys.orig_argv = [sys.executable, "-m", "flows.build_shards", "--source", "x"]
import flows.build_shards
from flows import terminal
from storage.cli import Common
during_imports = gc.isenabled()
terminal.configure(Common())
print(json.dumps({"during_imports": during_imports, "after_configure": gc.isenabled(),
                  "frozen": gc.get_freeze_count()}))
"""


def test_a_flow_cli_collects_again_once_it_is_configured():
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PREFECT_API_URL="http://127.0.0.1:9/api"))
    assert res.returncode == 0, res.stderr
    state = json.loads(res.stdout.strip().splitlines()[-1])
    assert state["during_imports"] is False
    assert state["after_configure"] is True
    assert state["frozen"] > 100_000  # the imported modules' objects, skipped by later collections


def test_a_library_import_leaves_collection_alone():
    assert gc.isenabled()  # pytest imported flows (conftest): no flow CLI, nothing paused


def test_paused_restores_the_state_it_found():
    try:
        gc.disable()
        with startup_gc.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
        gc.enable()
        with startup_gc.paused():
            assert not gc.isenabled()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.enable()
        gc.unfreeze()  # the test session's objects go back to being collected
