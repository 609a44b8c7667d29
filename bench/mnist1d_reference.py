"""Training soundness on MNIST-1D: simshard's ``single`` reference against the published figures.

    python bench/mnist1d_reference.py [--epochs 150]

The paper's setting (Greydanus 2020): 5,000 rows split 4,000 / 1,000, published test accuracy logistic
regression 32 %, MLP 68 %, CNN 94 %. Here: ``demo:mnist1d?rows=5000`` built with ``--validation-fraction
0.2`` (about 4,000 training rows), then the ``single`` reference (one process, Adam, batch 100) with the
default MLP and with ``train.cnn1d:cnn1d``; prints final and best validation accuracy beside the paper's.
"""

import argparse
import tempfile
import time

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from train.config import TrainConfig
from train.simulate import simulate

PUBLISHED = {"MLP": 0.68, "CNN": 0.94}
MODELS = {"MLP": None, "CNN": "train.cnn1d:cnn1d"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="simshard-mnist1d-") as tmp:
        manifest = build_shards(BuildConfig(source="demo:mnist1d?rows=5000", out=f"{tmp}/shards", workers=1,
                                            validation_fraction=0.2, order="random"))
        print(f"MNIST-1D: {manifest.rows_per_shard[0]} training rows, {manifest.validation.rows} validation rows; "
              f"single reference, Adam lr {args.lr}, batch 100, {args.epochs} epochs")
        print(f"{'model':>5} {'published':>9} {'final':>7} {'best':>7} {'seconds':>8}")
        for name, model in MODELS.items():
            start = time.perf_counter()
            s = simulate(TrainConfig(shards=f"{tmp}/shards", out=f"{tmp}/run-{name}", optimizer="single",
                                     epochs=args.epochs, model=model, batch_size=100, lr=args.lr), plots=False)
            print(f"{name:>5} {PUBLISHED[name]:>9.2f} {s['final_accuracy']:>7.3f} {s['best_accuracy']:>7.3f} "
                  f"{time.perf_counter() - start:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
