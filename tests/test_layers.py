"""The layers point one way: flows -> experiment -> pipeline, train -> storage. Only ``flows`` knows Prefect.

Read from the source with ``ast`` (imports inside functions count too), so a late import cannot hide a
dependency."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the simshard packages it may import (besides itself)
ALLOWED = {
    "storage": set(),
    "pipeline": {"storage"},
    "train": {"storage"},
    "experiment": {"pipeline", "train", "storage"},
    "flows": {"experiment", "pipeline", "train", "storage"},
}
PREFECT_ONLY_IN = {"flows"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        roots = imported_roots(path)
        wrong = (roots & set(ALLOWED)) - ALLOWED[package] - {package}
        if "prefect" in roots and package not in PREFECT_ONLY_IN:
            wrong.add("prefect")
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"imports against the layering: {bad}"


def test_the_checker_sees_late_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from flows.train import parse_config\n    import prefect.artifacts\n")
    assert imported_roots(sample) == {"flows", "prefect"}
