import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A private compile cache per test session keeps parallel developers/CI from contending, while
# reusing compiled code across the tests of one session.
os.environ.setdefault("PYTENSOR_FLAGS", "compile__timeout=1800")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def copy_workflow(target: Path) -> Path:
    """A runnable copy of the workflow (sources only) in `target`."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", target / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, target / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return target
