"""No process outlives the command line that started it, SIGKILL included.

A flow CLI starts children it does not control the life of: Prefect's temporary server (a uvicorn process that
stays up when its parent is killed) and, through libraries, others. ``watch_me()`` starts this module as a
small process in a session of its own (Ctrl-C in the terminal does not reach it): it records the driver's
descendants twice a second and, once the driver is gone, stops whichever of them are still running (terminate,
then kill after 5 s). ``psutil.Process`` compares creation times, so a reused PID is never touched.

    python -m flows.reaper PID
"""

import os
import subprocess
import sys
import time

import psutil

POLL_S = 0.5
GRACE_S = 5.0


_watching: subprocess.Popen | None = None


def watch_me() -> subprocess.Popen:
    """Start a reaper for this process (once: later calls return the same one)."""
    global _watching
    if _watching is None:
        _watching = subprocess.Popen([sys.executable, "-m", "flows.reaper", str(os.getpid())],
                                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    return _watching


def reap(pid: int) -> None:
    me = os.getpid()
    known: dict[int, psutil.Process] = {}
    try:
        driver = psutil.Process(pid)
        while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
            for child in driver.children(recursive=True):
                if child.pid != me:
                    known.setdefault(child.pid, child)
            time.sleep(POLL_S)
    except psutil.NoSuchProcess:
        pass
    left = [p for p in known.values() if p.is_running()]
    for proc in left:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(left, timeout=GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


if __name__ == "__main__":
    reap(int(sys.argv[1]))
