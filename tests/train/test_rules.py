"""The update rules on small known numbers (reference §1)."""

import pytest
import torch

from train.rules import average, make_rule

K = torch.tensor([3.0, 1.0, -2.0])
S = torch.tensor([1.0, 1.0, 0.0])


def test_downpour_commits_the_sum_of_local_steps_and_restarts_from_the_centre():
    r = make_rule("downpour", lr=0.1)
    payload = r.worker_payload(K, S, steps=4)
    assert payload.tolist() == [2.0, 0.0, -2.0]
    centre = torch.tensor([10.0, 10.0, 10.0])
    r.server_apply(centre, payload, staleness=5)
    assert centre.tolist() == [12.0, 10.0, 8.0]
    assert r.worker_next(K, payload, centre).tolist() == centre.tolist()


def test_agn_normalises_by_the_window():
    r = make_rule("agn", lr=0.1)
    assert r.worker_payload(K, S, steps=4).tolist() == [0.5, 0.0, -0.5]


def test_dynsgd_divides_by_staleness_plus_one():
    r = make_rule("dynsgd", lr=0.1)
    centre = torch.zeros(3)
    update = r.server_apply(centre, torch.tensor([4.0, 8.0, -4.0]), staleness=3)
    assert update.tolist() == [1.0, 2.0, -1.0] and centre.tolist() == [1.0, 2.0, -1.0]


def test_adag_scales_each_element_by_its_drift_since_the_pull():
    r = make_rule("adag", lr=0.1, gamma=0.5)
    centre = torch.tensor([1.0, 2.0, 3.0])
    pulled = torch.tensor([1.0, 1.0, 1.0])  # drift 0, 1, 2 -> factors 1/(0/0.5+1)=1, 1/3, 1/9
    update = r.server_apply(centre, torch.tensor([0.9, 0.9, 0.9]), staleness=2, pulled_centre=pulled)
    assert torch.allclose(update, torch.tensor([0.9, 0.3, 0.1]))
    with pytest.raises(ValueError, match="pulled"):
        r.server_apply(centre, update, staleness=0)


def test_aeasgd_elastic_difference_moves_both_sides():
    r = make_rule("aeasgd", lr=0.1, rho=2.0)  # alpha = 0.2
    centre = torch.tensor([1.0, 1.0, 0.0])
    e = r.worker_payload(K, centre, steps=7)
    assert torch.allclose(e, torch.tensor([0.4, 0.0, -0.4]))
    assert torch.allclose(r.worker_next(K, e, centre), torch.tensor([2.6, 1.0, -1.6]))
    r.server_apply(centre, e, staleness=0)
    assert torch.allclose(centre, torch.tensor([1.4, 1.0, -0.4]))


def test_model_averaging_is_the_mean():
    assert average([torch.tensor([1.0, 3.0]), torch.tensor([3.0, 5.0])]).tolist() == [2.0, 4.0]


def test_unknown_rule_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'hogwild'"):
        make_rule("hogwild", lr=0.1)
