"""Process set-up shared by the Snakemake scripts: logging into the rule's log file and a
compile cache that is safe under parallel jobs."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

# PyTensor waits at most this long for its compile-directory lock; the default (120 s) is too
# short when many cold jobs start together (pymc#6818).
COMPILE_LOCK_TIMEOUT_S = 1800


def configure_compile_cache() -> None:
    """Must run before pytensor is imported. ``VIMODES_COMPILEDIR`` moves the cache, e.g. to
    node-local storage on a cluster (never NFS)."""
    flags = [f for f in os.environ.get("PYTENSOR_FLAGS", "").split(",") if f]
    if not any(f.startswith("compile__timeout") for f in flags):
        flags.append(f"compile__timeout={COMPILE_LOCK_TIMEOUT_S}")
    compiledir = os.environ.get("VIMODES_COMPILEDIR")
    if compiledir and not any(f.startswith("base_compiledir") for f in flags):
        flags.append(f"base_compiledir={compiledir}")
    os.environ["PYTENSOR_FLAGS"] = ",".join(flags)


@contextlib.contextmanager
def script_logging(log_path: str | Path) -> Iterator[logging.Logger]:
    """Send this script's logging, stdout and stderr to the rule's log file."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as handle:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = handle
        logging.basicConfig(stream=handle, level=logging.INFO, force=True,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            yield logging.getLogger("vimodes")
        except BaseException:
            logging.getLogger("vimodes").exception("step failed")
            raise
        finally:
            handle.flush()
            sys.stdout, sys.stderr = old_out, old_err
