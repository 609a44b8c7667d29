"""Prefect reporting helpers shared by the flows: a throttled progress artifact and table artifacts."""

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

# share of the whole run taken by each step, in order: progress moves monotonically through them
STEP_SPAN = {"scan": (0, 30), "bucket": (30, 55), "write": (55, 95), "train": (0, 100),
             "build": (0, 25), "simulate": (25, 90)}  # the experiment: shard sets, then simulated cells


class ProgressReporter:
    """Callable ``(step, done, total)`` that keeps one Prefect progress artifact up to date."""

    def __init__(self, description: str):
        self.artifact_id = create_progress_artifact(progress=0.0, description=description)
        self.last = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        lo, hi = STEP_SPAN.get(step, (0, 100))
        value = lo + (hi - lo) * done / max(total, 1)
        if value - self.last >= 2 or done == total:
            self.set(value)

    def set(self, value: float) -> None:
        self.last = max(self.last, value)
        update_progress_artifact(artifact_id=self.artifact_id, progress=self.last)


def table_artifact(key: str, rows: list[dict], description: str) -> None:
    create_table_artifact(key=key, table=rows, description=description)
