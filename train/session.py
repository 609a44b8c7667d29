"""What a training run needs, built the same way in the simulator, the RPC processes and ``train.node``."""

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch

from storage import rng as rng_streams
from storage.coordinator import Coordinator
from storage.errors import InputError, ManifestError
from storage.index import BucketIndex, open_index
from storage.ownership import RUN_MARKER, check_apart, check_replaceable
from storage.shardset import ShardSet
from train import report, tightness
from train.config import ONLINE_WORKERS, TrainConfig
from train.data import OnlineStream, ShardStream, load_all, load_validation
from train.model import build_model, evaluate, get_flat, make_local_optimizer, set_flat
from train.rules import make_rule
from train.server import Cut, ParameterServer
from train.worker import worker_program

log = logging.getLogger("simshard.train")


@dataclasses.dataclass
class Setup:
    """``shards`` is the shard set, or with ``online`` (``--index``) the index (one locality-ordered shard)."""

    config: TrainConfig
    shards: ShardSet
    workers: int
    out: Path
    input_dim: int
    num_classes: int
    train_rows: int
    epochs: int
    window: int
    eval_every: int
    checkpoint_every: int
    online: bool = False

    @property
    def single(self) -> bool:
        return self.config.optimizer == "single"


def check_run_folder(config: TrainConfig) -> Path:
    """The run folder: apart from the shard set; an existing non-empty one only with --resume, or with
    --overwrite when it is a run folder simshard made."""
    out = Path(config.out).expanduser().absolute()
    check_apart(out, Path(config.data).expanduser().absolute(), output_flag="--out",
                other_flag="--index" if config.index else "--shards")
    if out.exists() and not out.is_dir():
        raise InputError(f"run folder {out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not (config.resume or config.overwrite):
        raise InputError(f"run folder {out} already exists; pass --overwrite or --resume")
    if config.overwrite and not config.resume:
        check_replaceable(out, kind="run")
    return out


def prepare(config: TrainConfig, *, create_out: bool = True) -> Setup:
    """Validate the shard set and the model against the request; create the run folder (unless in a child
    process, which joins the folder its launcher made)."""
    online = config.index is not None
    shards = open_index(config.index) if online else _open_shards(config.shards)
    m = shards.manifest
    if m.label is None:
        raise InputError(f"{config.data}: the data has no label column; rebuild it with --label")
    if not m.validation.rows:
        raise InputError(f"{config.data}: the data has no validation rows; rebuild with --validation-fraction")
    single = config.optimizer == "single"
    if online:
        workers = config.workers or ONLINE_WORKERS
        if not single and workers * config.batch_size > m.rows_per_shard[0]:
            raise InputError(f"--workers {workers} × --batch-size {config.batch_size} rows a step is more than the "
                             f"{m.rows_per_shard[0]} training rows in {config.index}; pass fewer workers or a "
                             "smaller batch")
    else:
        workers = config.workers or m.workers
        if workers > m.workers:
            raise InputError(f"--workers {workers} is more than the {m.workers} shards in {config.shards}; "
                             f"pass --workers {m.workers} or fewer, or rebuild with more shards")
    check_model(config.model, input_dim=m.columns.dim, num_classes=m.label.num_classes)
    out = Path(config.out).expanduser().absolute()
    if create_out:
        check_run_folder(config)
        if out.exists() and config.overwrite and not config.resume:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_MARKER).write_text(json.dumps({"format": "simshard.run", "data": str(config.data),
                                                  "optimizer": config.optimizer}))
    if online:
        train_rows = m.rows_per_shard[0]
        per_worker = train_rows // workers  # an even share of each epoch's rows
    else:
        train_rows = sum(m.rows_per_shard[:workers])
        per_worker = min(m.rows_per_shard[:workers])
    plan = config.run_length(shard_rows=train_rows if single else per_worker)
    if plan.reason and create_out:
        log.info("defaults for this data: %s", plan.reason)
    per_epoch = train_rows / config.batch_size / plan.window
    if config.optimizer == "averaging":
        per_epoch /= workers
    eval_every = config.eval_every or max(1, round(per_epoch / 8))
    return Setup(config, shards, 1 if single else workers, out, m.columns.dim, m.label.num_classes,
                 train_rows, plan.epochs, plan.window, eval_every, config.checkpoint_every or 10 * eval_every,
                 online=online and not single)


def _open_shards(folder: str) -> ShardSet:
    try:
        shards = ShardSet(folder)
    except ManifestError as exc:
        raise InputError(str(exc)) from exc
    if shards.manifest.kind == "index":
        raise InputError(f"--shards {folder} is an index (build_index), not a shard set; pass it as --index to "
                         "train with online coordination")
    return shards


def check_model(spec: str | None, *, input_dim: int, num_classes: int) -> None:
    """Build the model and run a batch of two rows: it must give one logit per class."""
    model = build_model(spec, input_dim=input_dim, num_classes=num_classes, seed=0)
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, input_dim))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported the same way
        raise InputError(f"--model {spec}: a batch of shape (2, {input_dim}) fails: {exc}") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"--model {spec}: a batch of 2 rows gives {shape}; training needs (2, {num_classes}), "
                         "one logit per class")


class AllRowsStream:
    """The ``single`` reference: every shard's rows in one stream, shuffled IID each epoch."""

    def __init__(self, shards: ShardSet, *, batch_size: int, seed: int):
        x, y = load_all(shards)
        self.x, self.y, self.batch_size, self.seed = torch.from_numpy(x), torch.from_numpy(y), batch_size, seed

    def __len__(self):
        return len(self.y)

    def batches(self, epoch: int, start_sample: int = 0):
        order = torch.from_numpy(rng_streams.epoch_all_rows(self.seed, epoch).permutation(len(self.y)))
        for s in range(start_sample, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            yield self.x[idx], self.y[idx]


def new_model(setup: Setup) -> torch.nn.Module:
    return build_model(setup.config.model, input_dim=setup.input_dim, num_classes=setup.num_classes,
                       seed=setup.config.seed)


def worker(setup: Setup, k: int):
    """Worker k's program (a generator; see :mod:`train.worker`)."""
    cfg = setup.config
    model = new_model(setup)
    torch.manual_seed(rng_streams.worker_torch_seed(cfg.seed, k))
    if cfg.optimizer == "single":
        stream = AllRowsStream(setup.shards, batch_size=cfg.batch_size, seed=cfg.seed)
        rule, window = make_rule("downpour", lr=cfg.resolved_lr()), 1  # λ=1 with one worker: plain training
    else:
        if setup.online:
            index = BucketIndex(setup.shards, cache_bytes=int(cfg.cache_mb * 2**20), seed=cfg.seed)
            stream = OnlineStream(index, ahead=setup.window)
        else:
            stream = ShardStream(setup.shards, k, batch_size=cfg.batch_size, seed=cfg.seed)
        rule = None if cfg.optimizer == "averaging" else make_rule(cfg.optimizer, lr=cfg.resolved_lr(),
                                                                     rho=cfg.rho, gamma=cfg.gamma)
        window = setup.window
    optimizer = make_local_optimizer(cfg.resolved_local(), model, cfg.resolved_lr())
    return worker_program(rule=rule, model=model, optimizer=optimizer, stream=stream, epochs=setup.epochs,
                          window=window, stats=lambda: _stream_stats(stream))


def _stream_stats(stream) -> dict:
    if isinstance(stream, OnlineStream):
        cache = stream.index.cache.stats
        return {"cache_hits": cache.hits, "cache_misses": cache.misses}
    return {}


def coordinator(setup: Setup) -> Coordinator | None:
    """The online coordinator of a ``--index`` run (None for pre-split shards)."""
    if not setup.online:
        return None
    steps_per_epoch = max(1, setup.train_rows // (setup.workers * setup.config.batch_size))
    return Coordinator(bucket_rows=setup.shards.manifest.buckets.rows, workers=setup.workers,
                       batch_size=setup.config.batch_size, seed=setup.config.seed,
                       sample_every=max(1, steps_per_epoch * setup.epochs // tightness.SAMPLED_STEPS),
                       max_samples=tightness.SAMPLED_STEPS)


class Monitor:
    """Evaluates snapshots of θ̃ on the validation set, logs progress and writes the checkpoints (cuts) the
    parameter server hands over."""

    def __init__(self, setup: Setup, *, progress=None, history: list[dict] | None = None):
        self.setup, self.progress = setup, progress
        self.model = new_model(setup)
        self.x, self.y = load_validation(setup.shards)
        self.evals: list[dict] = list(history or [])
        self.server: ParameterServer | None = None
        self.start = time.monotonic()

    def __call__(self, clock: int, epoch: float, centre: torch.Tensor) -> None:
        loss, acc = evaluate(self.model, centre, self.x, self.y)
        self.evals.append({"time": self.server.elapsed(), "epoch": epoch, "commit": clock,
                           "loss": loss, "accuracy": acc})
        log.info("commit %d  epoch %.2f  validation loss %.4f  accuracy %.4f", clock, epoch, loss, acc)
        if self.progress:
            self.progress("train", min(epoch, self.setup.epochs), self.setup.epochs, clock=clock, accuracy=acc)

    def checkpoint(self, cut: Cut) -> None:
        """Write ``cut`` as checkpoint.pt, with the history up to its clock."""
        report.save_checkpoint(self.setup.out, cut, optimizer=self.setup.config.optimizer, workers=self.setup.workers,
                               evals=[e for e in self.evals if e["commit"] <= cut.clock],
                               records=self.server.records[:cut.records])


def server(setup: Setup, monitor: Monitor, *, now=time.monotonic) -> ParameterServer:
    """The parameter server, fresh or restored from the run folder's checkpoint (``--resume``)."""
    cfg = setup.config
    rule = None if cfg.optimizer == "averaging" else make_rule(
        "downpour" if cfg.optimizer == "single" else cfg.optimizer, lr=cfg.resolved_lr(), rho=cfg.rho,
        gamma=cfg.gamma)
    state = {}
    if cfg.resume:
        ckpt = report.load_checkpoint(setup.out)
        if ckpt["optimizer"] != cfg.optimizer:
            raise InputError(f"--resume: the checkpoint is for {ckpt['optimizer']}, not {cfg.optimizer}")
        state = {"centre": ckpt["centre"], "clock": int(ckpt["clock"]),
                 "cursors": [tuple(c) for c in ckpt["cursors"].tolist()], "samples": ckpt["samples"].tolist(),
                 "optimizer_states": ckpt["optimizer_states"], "elapsed": float(ckpt["elapsed"])}
        monitor.evals = list(ckpt["evals"])
        log.info("resuming at clock %d", state["clock"])
    centre = state.pop("centre", None)
    if centre is None:
        centre = get_flat(new_model(setup))
    ps = ParameterServer(rule=rule, centre=centre, workers=setup.workers, train_rows=setup.train_rows,
                         eval_every=setup.eval_every, on_snapshot=monitor, checkpoint_every=setup.checkpoint_every,
                         on_checkpoint=monitor.checkpoint, now=now, **state)
    if cfg.resume:
        ps.records = list(ckpt["records"])
    ps.coordinator = coordinator(setup)
    monitor.server = ps
    return ps


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def finish(setup: Setup, ps: ParameterServer, monitor: Monitor, *, plots: bool = True,
           extra: dict | None = None) -> dict:
    """Final evaluation, checkpoint and outputs; returns the summary. Its ``training_seconds`` is the metrics'
    time at the end (continuing across resumes); the launcher adds ``startup_seconds`` and ``wall_seconds``."""
    cfg = setup.config
    if not monitor.evals or monitor.evals[-1]["commit"] != ps.clock:
        monitor(ps.clock, ps.epoch, ps.centre.clone())
    monitor.checkpoint(ps.final_cut())
    rows = setup.shards.manifest.rows_per_shard
    if setup.online or setup.single:  # every epoch's rows are shared by all workers
        unseen = max(0, setup.train_rows * setup.epochs - sum(ps.samples))
    else:
        unseen = sum(max(0, rows[k] * setup.epochs - s) for k, s in enumerate(ps.samples))
    dead = [k for k, s in enumerate(ps.status) if s == 2]
    if setup.online:
        measured = tightness.online(ps.coordinator.sampled.values(), setup.shards, seed=cfg.seed)
    else:
        measured = tightness.presplit(setup.shards, workers=setup.workers, batch_size=cfg.batch_size,
                                      seed=cfg.seed) if not setup.single else tightness.Measured(None, [])
    df = report.metrics_frame(ps.records, monitor.evals, steps=measured.steps)
    summary = report.summarize(df, optimizer=cfg.optimizer, workers=setup.workers, epochs=setup.epochs,
                               target=cfg.target_accuracy, unseen_rows=unseen, dead_workers=dead,
                               training_seconds=ps.elapsed())
    summary["auc"] = report.auc(df)
    summary["index" if setup.online else "shards"] = str(setup.shards.folder)
    summary["eval_every"] = setup.eval_every
    summary["window"] = setup.window
    summary["step_tightness"] = measured.ratio
    if setup.online:
        hits, misses = (sum(s.get(f"cache_{k}", 0) for s in ps.worker_stats.values()) for k in ("hits", "misses"))
        summary["cache_hit_rate"] = hits / (hits + misses) if hits + misses else None
        summary["mean_distinct_buckets"] = _mean([s["distinct_buckets"] for s in measured.steps])
        summary["spills_per_step"] = _mean([s["spills"] for s in measured.steps])
    summary.update(extra or {})
    model = new_model(setup)
    set_flat(model, ps.centre)
    report.write_outputs(setup.out, df=df, summary=summary, state_dict=model.state_dict(),
                         title=f"{cfg.optimizer}, {setup.workers} workers", plots=plots)
    if math.isfinite(summary["final_accuracy"] or math.nan):
        log.info("final accuracy %.4f after %d commits", summary["final_accuracy"], summary["commits"])
    return summary
