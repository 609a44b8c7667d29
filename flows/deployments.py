"""The deployments of simshard, defined once: ``flows.serve`` serves them and ``prefect.yaml`` declares the
same names, entrypoints, schedules and parameters for ``prefect deploy --all`` (a test keeps both in step)."""

from flows.build_index import build_index
from flows.build_shards import build_shards
from flows.pipeline import pipeline
from flows.train import train

WORK_POOL = "simshard-process"
NIGHTLY_CRON = "0 2 * * *"

DEPLOYMENTS = {
    "nightly-build": dict(flow=build_shards, entrypoint="flows/build_shards.py:build_shards", cron=NIGHTLY_CRON,
                          parameters={"config": {"out": "./shards", "overwrite": True}}),
    "build-index": dict(flow=build_index, entrypoint="flows/build_index.py:build_index", cron=None,
                        parameters={"config": {"out": "./index", "overwrite": True}}),
    "train": dict(flow=train, entrypoint="flows/train.py:train", cron=None,
                  parameters={"config": {"shards": "./shards", "out": "./runs/latest", "overwrite": True}}),
    "pipeline": dict(flow=pipeline, entrypoint="flows/pipeline.py:pipeline", cron=None,
                     parameters={"config": {"build": {"overwrite": True}, "train": {"overwrite": True}}}),
}
