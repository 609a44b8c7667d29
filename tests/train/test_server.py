"""The parameter server core: clock under the lock, staleness, conflict, synchronous rounds."""

import threading

import torch

from train.rules import make_rule
from train.server import ParameterServer


def server(rule="downpour", workers=2):
    snaps = []
    ps = ParameterServer(rule=None if rule is None else make_rule(rule, lr=0.1), centre=torch.zeros(2),
                         workers=workers, train_rows=100, eval_every=2,
                         on_snapshot=lambda *a: snaps.append(a))
    return ps, snaps


def test_staleness_counts_commits_since_the_pull_and_conflict_is_the_cosine():
    ps, snaps = server()
    _, c0, _ = ps.pull(0)
    _, c1, _ = ps.pull(1)
    ps.commit(0, torch.tensor([1.0, 0.0]), clock=c0, samples=10, cursor=(0, 10), loss=1.0)
    ps.commit(1, torch.tensor([0.0, 2.0]), clock=c1, samples=10, cursor=(0, 10), loss=1.0)
    ps.commit(1, torch.tensor([-3.0, 0.0]), clock=2, samples=10, cursor=(0, 20), loss=1.0)
    r = ps.records
    assert [x["staleness"] for x in r] == [0, 1, 0]
    assert r[1]["conflict"] == 0.0  # orthogonal to worker 0's commit
    assert r[2]["conflict"] == -1.0  # against worker 0's last commit, not its own
    assert ps.centre.tolist() == [-2.0, 2.0] and ps.epoch == 0.3
    assert [s[0] for s in snaps] == [2]


def test_concurrent_commits_never_lose_an_update():
    ps, _ = server(workers=8)

    def hammer(k):
        for _ in range(200):
            ps.commit(k, torch.ones(2), clock=ps.clock, samples=1, cursor=(0, 0), loss=0.0)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ps.clock == 1600 and ps.centre.tolist() == [1600.0, 1600.0]


def test_a_round_closes_when_every_running_worker_has_submitted():
    ps, _ = server(rule=None, workers=3)
    f0 = ps.average(0, torch.tensor([3.0, 0.0]), samples=1, cursor=(0, 1), loss=0.0)
    ps.done(2)  # worker 2 ran out of rows: it must not hold the round back
    assert not f0.done()
    f1 = ps.average(1, torch.tensor([1.0, 2.0]), samples=1, cursor=(0, 1), loss=0.0)
    assert f0.done() and f1.done() and f0.value().tolist() == [2.0, 1.0] and ps.clock == 1
