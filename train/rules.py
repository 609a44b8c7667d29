"""Update rules of the thesis (reference §1) as pure tensor code, with no transport.

Parameters travel as one flat float32 vector. A worker keeps ``theta_k`` (its parameters) and ``theta_s``
(the centre it pulled last, at clock ``c_s``); after a window of ``steps`` local steps it asks the rule for a
payload to commit, the parameter server applies it with ``server_apply`` and the worker continues from what
``worker_next`` returns. The same objects run in :mod:`train.simulate` and over RPC.

| rule     | worker payload                         | server on commit (tau = c - c_s)                 | worker after |
|----------|----------------------------------------|--------------------------------------------------|--------------|
| downpour | theta_k - theta_s                      | c += payload                                     | pull         |
| agn      | (theta_k - theta_s) / steps            | c += payload                                     | pull         |
| dynsgd   | theta_k - theta_s                      | c += payload / (tau + 1)                         | pull         |
| adag     | (theta_k - theta_s) / steps            | c += payload / ((c - theta_s)^2 / gamma + 1)     | pull         |
| aeasgd   | E = alpha (theta_k - c_now), alpha=rho*lr | c += E                                        | theta_k - E  |
| eamsgd   | as aeasgd (local step: Nesterov momentum) | c += E                                        | theta_k - E  |
"""

import dataclasses

import torch

RULES = ("downpour", "agn", "adag", "dynsgd", "aeasgd", "eamsgd")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One asynchronous rule. ``elastic`` rules pull the current centre before computing the payload and keep
    their own parameters afterwards; the others restart from the centre after each commit."""

    name: str
    lr: float = 0.01
    rho: float = 5.0
    gamma: float = 1e-4

    @property
    def elastic(self) -> bool:
        return self.name in ("aeasgd", "eamsgd")

    @property
    def needs_pulled_centre(self) -> bool:
        """ADAG scales by the distance between the current centre and the centre the worker pulled."""
        return self.name == "adag"

    def worker_payload(self, theta_k: torch.Tensor, theta_s: torch.Tensor, steps: int) -> torch.Tensor:
        """What to commit after ``steps`` local steps. For elastic rules ``theta_s`` is the centre just pulled."""
        if steps < 1:
            raise ValueError("a window has at least one local step")
        diff = theta_k - theta_s
        if self.name in ("downpour", "dynsgd"):
            return diff
        if self.name in ("agn", "adag"):
            return diff / steps
        if self.elastic:
            return self.lr * self.rho * diff
        raise ValueError(f"unknown rule {self.name!r}")

    def server_apply(self, centre: torch.Tensor, payload: torch.Tensor, *, staleness: int,
                     pulled_centre: torch.Tensor | None = None) -> torch.Tensor:
        """Apply a commit to ``centre`` in place; returns the update actually added."""
        if self.name == "dynsgd":
            update = payload / (staleness + 1)
        elif self.name == "adag":
            if pulled_centre is None:
                raise ValueError("adag needs the centre the worker pulled")
            update = payload / ((centre - pulled_centre).square() / self.gamma + 1)
        else:
            update = payload
        centre.add_(update)
        return update

    def worker_next(self, theta_k: torch.Tensor, payload: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """The worker's parameters after a commit: its own minus E for elastic rules, else the new centre."""
        return theta_k - payload if self.elastic else centre.clone()


def make_rule(name: str, *, lr: float, rho: float = 5.0, gamma: float = 1e-4) -> Rule:
    if name not in RULES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(RULES)}, averaging, single")
    return Rule(name, lr=lr, rho=rho, gamma=gamma)


def average(thetas: list[torch.Tensor]) -> torch.Tensor:
    """Synchronous model averaging: the mean of the workers' parameters."""
    return torch.stack(thetas).mean(0)
