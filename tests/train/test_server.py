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
    assert f0.done() and f1.done() and f0.value()[0].tolist() == [2.0, 1.0] and ps.clock == 1


def checkpointing_server(workers=2, every=2, eval_every=3):
    cuts = []
    ps = ParameterServer(rule=make_rule("downpour", lr=0.1), centre=torch.zeros(2), workers=workers, train_rows=100,
                         eval_every=eval_every, on_snapshot=lambda *a: None, checkpoint_every=every,
                         on_checkpoint=cuts.append)
    return ps, cuts


def commit(ps, k, rows):
    return ps.commit(k, torch.ones(2), clock=ps.clock, samples=10, cursor=(0, rows), loss=0.0)


def test_a_checkpoint_is_one_cut_of_centre_cursors_and_optimizer_states():
    ps, cuts = checkpointing_server()
    assert commit(ps, 0, 10)[2] is False  # clock 1
    assert commit(ps, 1, 10)[2] is False  # clock 2: the cut is taken here
    centre_at_cut = ps.centre.clone()
    assert commit(ps, 0, 20)[2] is True  # worker 0's next exchange asks for its state before the cut
    ps.save_state(0, {"steps": 1})
    assert commit(ps, 1, 20)[2] is True  # clock 4 is skipped: the cut of clock 2 is still open
    assert not cuts
    ps.save_state(1, {"steps": 1})
    (cut,) = cuts
    assert cut.clock == 2 and cut.cursors == [(0, 10), (0, 10)] and cut.samples == [10, 10]
    assert cut.states == {0: {"steps": 1}, 1: {"steps": 1}} and torch.equal(cut.centre, centre_at_cut)
    assert cut.records == 2


def test_a_finished_worker_sends_its_state_with_done_and_a_dead_one_is_left_out():
    ps, cuts = checkpointing_server(workers=3)
    commit(ps, 0, 10)
    commit(ps, 1, 10)  # cut at clock 2 waits for workers 0, 1 and 2
    ps.done(2, state={"last": 2})
    ps.done(1, dead=True)
    assert not cuts
    commit(ps, 0, 20)
    ps.save_state(0, {"steps": 1})
    (cut,) = cuts
    assert cut.states == {0: {"steps": 1}, 2: {"last": 2}}


def test_checkpoints_do_not_depend_on_evaluations():
    ps, cuts = checkpointing_server(every=5, eval_every=3)
    for i in range(12):
        if commit(ps, i % 2, 10 * (i + 1))[2]:
            ps.save_state(i % 2, {})
    assert [c.clock for c in cuts] == [5, 10]
