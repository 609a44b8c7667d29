"""The worker's program, free of any transport.

``worker_program`` is a generator: it yields requests (:class:`Start`, :class:`Pull`, :class:`Commit`,
:class:`Average`, :class:`SaveState`, :class:`Done`, and :class:`~train.data.Draw` when its data comes from
online coordination) and is sent each answer. :mod:`train.simulate` answers
them in-process under a staleness schedule; :mod:`train.rpc` answers them with RPC calls to the parameter
server. The training arithmetic is the same in both.

Checkpoints: the worker keeps a copy of its local optimizer's state as of its last exchange (the state that
goes with the cursor the parameter server recorded for it). When an exchange's answer says a checkpoint
wants it, the worker sends that copy (:class:`SaveState`), so the checkpoint holds every worker's optimizer
state at the same cut as the centre and the cursors (see :mod:`train.server`).
"""

import dataclasses

import torch
from torch import nn

from train.data import Draw, ShardStream
from train.model import get_flat, set_flat
from train.rules import Rule


@dataclasses.dataclass
class Start:
    """The first request. Answer: (centre, clock, start cursor (epoch, sample), optimizer state or None)."""


@dataclasses.dataclass
class Pull:
    """Answer: (centre, clock, cursor)."""


@dataclasses.dataclass
class Commit:
    """Answer: (centre after this commit, clock, whether a checkpoint wants the previous optimizer state)."""

    payload: torch.Tensor
    clock: int  # clock of the centre the payload was computed against
    samples: int  # rows trained in this window
    cursor: tuple[int, int]  # (epoch, sample in epoch) after this window
    loss: float  # mean training loss over the window


@dataclasses.dataclass
class Average:
    """Synchronous round. Answer: (the averaged centre, whether a checkpoint wants the previous state)."""

    theta: torch.Tensor
    samples: int
    cursor: tuple[int, int]
    loss: float


@dataclasses.dataclass
class SaveState:
    """The local optimizer's state as of the worker's previous exchange, for a pending checkpoint."""

    state: dict


@dataclasses.dataclass
class Done:
    samples: int
    state: dict  # the local optimizer's state as of the last exchange (= now)
    stats: dict = dataclasses.field(default_factory=dict)  # the data source's counters (bucket cache hits...)


def snapshot(optimizer: torch.optim.Optimizer) -> dict:
    """A copy of the optimizer's state dict that later steps do not change: the state tensors are cloned
    (``state_dict()`` already builds fresh param-group dicts). About 6x cheaper than ``copy.deepcopy``, which
    cost as much as a local step here."""
    sd = optimizer.state_dict()
    state = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()} for k, s in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def worker_program(*, rule: Rule | None, model: nn.Module, optimizer: torch.optim.Optimizer, stream: ShardStream,
                   epochs: int, window: int, stats=dict):
    """Train on ``stream`` for ``epochs`` epochs, talking to the parameter server every ``window`` steps.
    ``rule`` None means synchronous model averaging. The last partial window is always committed.
    ``stats()`` gives the counters reported with :class:`Done`."""
    centre, clock, (epoch0, sample0), state = yield Start()
    if state:
        optimizer.load_state_dict(state)
    set_flat(model, centre)
    kept = snapshot(optimizer)  # the state that goes with the last recorded cursor
    theta_s = centre
    loss_fn = nn.CrossEntropyLoss()
    steps = samples = total = 0
    loss_sum = 0.0
    cursor = (epoch0, sample0)

    def exchange():
        nonlocal theta_s, clock, steps, samples, loss_sum, kept
        theta_k = get_flat(model)
        loss = loss_sum / steps
        if rule is None:
            centre, wanted = yield Average(theta_k, samples, cursor, loss)
            clock += 1  # one averaging round: every running worker takes part in each
            set_flat(model, centre)
        elif rule.elastic:
            centre_now, clock_now, _ = yield Pull()
            payload = rule.worker_payload(theta_k, centre_now, steps)
            _, clock, wanted = yield Commit(payload, clock_now, samples, cursor, loss)
            set_flat(model, rule.worker_next(theta_k, payload, centre_now))
        else:
            payload = rule.worker_payload(theta_k, theta_s, steps)
            theta_s, clock, wanted = yield Commit(payload, clock, samples, cursor, loss)
            set_flat(model, theta_s)
        if wanted:
            yield SaveState(kept)
        kept = snapshot(optimizer)
        steps = samples = 0
        loss_sum = 0.0

    # an online stream has no length: its epoch ends when the coordinator's rows run out
    length = len(stream) if hasattr(stream, "__len__") else None
    for epoch in range(epoch0, epochs):
        start = sample0 if epoch == epoch0 else 0
        position = start
        source = stream.batches(epoch, start)  # a generator: it may ask the coordinator for its rows
        answer = None
        while True:
            try:
                item = source.send(answer)
            except StopIteration:
                break
            if isinstance(item, Draw):
                answer = yield item
                continue
            answer = None
            x, y = item
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            steps += 1
            samples += len(y)
            total += len(y)
            position += len(y)
            loss_sum += float(loss.detach())
            cursor = (epoch, position) if length is None or position < length else (epoch + 1, 0)
            if steps == window:
                yield from exchange()
        if length is None:
            cursor = (epoch + 1, 0)
    if steps:
        yield from exchange()
    yield Done(total, kept, stats())
