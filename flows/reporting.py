"""Prefect reporting helpers shared by the flows: a throttled progress artifact, table artifacts with rounded
figures, and markdown artifacts that embed PNG plots."""

import base64
import math
from pathlib import Path

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from storage import urls

# share of the whole run taken by each step, in order: progress moves monotonically through them
STEP_SPAN = {"scan": (0, 30), "bucket": (30, 55), "write": (55, 95), "train": (0, 100),
             "build": (0, 25), "simulate": (25, 90)}  # the experiment: shard sets, then simulated cells
SIGNIFICANT = 4


class ProgressReporter:
    """Callable ``(step, done, total)`` that keeps one Prefect progress artifact up to date."""

    def __init__(self, description: str):
        self.artifact_id = create_progress_artifact(progress=0.0, description=description)
        self.last = 0.0

    def __call__(self, step: str, done: float, total: float, **_details) -> None:
        lo, hi = STEP_SPAN.get(step, (0, 100))
        value = lo + (hi - lo) * done / max(total, 1)
        if value - self.last >= 2 or done == total:
            self.set(value)

    def set(self, value: float) -> None:
        self.last = max(self.last, value)
        update_progress_artifact(artifact_id=self.artifact_id, progress=self.last)


def rounded(value, digits: int = SIGNIFICANT):
    """``value`` with every float rounded to ``digits`` significant digits (lists and dicts too)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return value if not math.isfinite(value) or value == 0 else float(f"{value:.{digits}g}")
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return value


def table_artifact(key: str, rows: list[dict], description: str) -> None:
    create_table_artifact(key=key, table=[rounded(r) for r in rows], description=description)


def png_markdown(path: Path, title: str) -> str:
    data = base64.b64encode(urls.folder(path).read_bytes()).decode()
    return f"![{title}](data:image/png;base64,{data})"


def markdown_artifact(key: str, markdown: str, description: str) -> None:
    create_markdown_artifact(key=key, markdown=markdown, description=description)
