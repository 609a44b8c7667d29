import numpy as np
import pytest

from pipeline.deal import ORDERS, deal, locality_key, locality_order, stable_argsort


def _inputs(n=1003, seed=0):
    rng = np.random.default_rng(seed)
    return dict(source_row=rng.permutation(5 * n)[:n].astype(np.int64), rank=rng.integers(0, 17, n),
                key=rng.random(n).astype(np.float32))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("remainder", ["keep", "drop"])
def test_every_row_gets_a_unique_slot(order, remainder):
    d = deal(**_inputs(), workers=8, order=order, seed=3, remainder=remainder)
    kept = d.shard >= 0
    assert kept.sum() == (1003 if remainder == "keep" else 1000) and d.dropped == 1003 - kept.sum()
    for i in range(8):
        assert sorted(d.pos[d.shard == i]) == list(range(d.rows_per_shard[i]))
    assert max(d.rows_per_shard) - min(d.rows_per_shard) <= (1 if remainder == "keep" else 0)


def test_aligned_rows_k_form_the_groups_of_locality_order():
    inp = _inputs()
    d = deal(**inp, workers=4, order="aligned", seed=1)
    sequence = np.lexsort((inp["source_row"], inp["key"], inp["rank"]))
    group_of = np.empty(len(sequence), np.int64)
    group_of[sequence] = np.arange(len(sequence)) // 4
    for k in range(d.groups):
        members = group_of[d.pos == k]
        assert len(members) == 4 and len(set(members)) == 1
    # groups are dealt in shuffled order, not locality order; the partial group is last
    first_group_per_pos = [group_of[(d.pos == k) & (d.shard == 0)][0] for k in range(d.groups)]
    assert first_group_per_pos != sorted(first_group_per_pos)
    assert set(group_of[d.pos == d.groups]) == {d.groups} and d.partial_group == 3


def test_diverse_keeps_aligned_composition_and_spreads_each_position():
    inp = _inputs()
    aligned = deal(**inp, workers=4, order="aligned", seed=1)
    diverse = deal(**inp, workers=4, order="diverse", seed=1)
    sequence = np.lexsort((inp["source_row"], inp["key"], inp["rank"]))
    group_of = np.empty(len(sequence), np.int64)
    group_of[sequence] = np.arange(len(sequence)) // 4
    for i in range(4):  # the same rows per shard: member i of every group
        assert set(np.flatnonzero(diverse.shard == i)) == set(np.flatnonzero(aligned.shard == i))
    stride = diverse.groups // 4
    for k in range(diverse.groups):
        here = [group_of[(diverse.pos == k) & (diverse.shard == i)][0] for i in range(4)]
        gaps = {(g - here[0]) % diverse.groups for g in here}
        assert gaps == {i * stride for i in range(4)}, here  # a stride apart in locality order


def test_same_seed_same_deal_other_seed_other_deal():
    a = deal(**_inputs(), workers=4, order="aligned", seed=1)
    b = deal(**_inputs(), workers=4, order="aligned", seed=1)
    c = deal(**_inputs(), workers=4, order="aligned", seed=2)
    assert (a.pos == b.pos).all() and not (a.pos == c.pos).all()


def test_contiguous_keeps_source_order_in_ranges():
    inp = _inputs()
    d = deal(**inp, workers=4, order="contiguous", seed=0)
    for i in range(4):
        rows = inp["source_row"][d.shard == i][np.argsort(d.pos[d.shard == i])]
        assert (np.diff(rows) > 0).all()
    assert inp["source_row"][d.shard == 0].max() < inp["source_row"][d.shard == 1].min()


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("arrival", ["source order", "random", "sorted runs", "sorted runs reversed"])
def test_locality_order_is_lexsort_of_rank_key_source_row(arrival, ties):
    rng = np.random.default_rng(5)
    n = 5000
    rank = rng.integers(0, 9, n)
    if ties:
        key = rng.choice(np.array([-2.5, -0.0, 0.0, 1e-30, 3.0, -1e-30, np.float32(7.25)], np.float32), n)
    else:
        key = rng.standard_normal(n).astype(np.float32)
    source_row = np.arange(n) * 3 if arrival != "random" else rng.permutation(n)
    # chunks of rows, each in (rank, key, source_row) order, as the bucket pass sends them
    if arrival.startswith("sorted runs"):
        runs = [np.lexsort((source_row[r], key[r], rank[r])) + r[0] for r in np.array_split(np.arange(n), 7)]
        order = np.concatenate(runs[::-1] if arrival.endswith("reversed") else runs)
        rank, key, source_row = rank[order], key[order], source_row[order]
    expected = np.lexsort((source_row, key, rank))
    assert np.array_equal(locality_order(rank=rank, key=key, source_row=source_row), expected)


@pytest.mark.parametrize("distinct", [1, 3, 40, 10**9])
@pytest.mark.parametrize("n", [0, 1, 2, 9_999])
def test_stable_argsort_is_numpys_stable_argsort(n, distinct):
    rng = np.random.default_rng(n + distinct)
    keys = locality_key(rank=rng.integers(0, 4, n), key=rng.integers(0, distinct, n).astype(np.float32))
    assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("decimals", [1, 3, 17])
def test_stable_argsort_of_float64_draws(decimals):
    """The scan's sample merge sorts float64 draws with it; ties among draws must keep their input order too."""
    u = np.round(np.random.default_rng(decimals).random(20_000), decimals)
    assert np.array_equal(stable_argsort(u), np.argsort(u, kind="stable"))
