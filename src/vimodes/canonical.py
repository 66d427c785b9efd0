"""Canonical content hashes of a study's outputs, to check that two runs produced the same study.

* NetCDF files (data sets, posterior draws) are written canonically (see :mod:`vimodes.idata`:
  no timestamps or wall-clock statistics, sorted variables; HDF5 object times are not tracked),
  so their hash is the sha256 of the bytes: nothing is ignored.
* Stored arrays (``.npz``, results another cell reuses) are hashed by their arrays, less the
  timings of their ``info`` (:func:`arrays_sha256`).
* A fit record (``seed-<s>.json``) and a table (parquet, CSV) hold wall-clock timings that
  differ between runs by nature; their hash leaves out exactly the timing keys/columns
  (:func:`vimodes.records.is_volatile`) and nothing else.

``study_hashes(study_dir)`` hashes every output under ``data/`` (simulated data, fits, classified
chunks, tables); ``study_digest`` folds them into one hex digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from vimodes.records import file_sha256, is_volatile, read_arrays


OUTPUT_FOLDERS = ("data/sim", "data/fits", "data/classified", "data/tables")


def record_sha256(path: str | Path) -> str:
    """A fit record without its timings, serialised canonically."""
    record = json.loads(Path(path).read_text())
    kept = {k: v for k, v in record.items() if not is_volatile(k)}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def table_sha256(path: str | Path) -> str:
    """A table's column names, dtypes and values (floats round-tripped exactly), less timings."""
    path = Path(path)
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    frame = frame.drop(columns=[c for c in frame.columns if is_volatile(c)])
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(frame.to_csv(index=False, float_format="%.17g").encode())
    return digest.hexdigest()


def arrays_sha256(path: str | Path) -> str:
    """Stored arrays (``.npz``): names, dtypes, shapes and values, with the timings left out of
    an ``info`` JSON string; the zip container's member dates do not count."""
    digest = hashlib.sha256()
    for name, array in sorted(read_arrays(path).items()):
        if name == "info":
            info = {k: v for k, v in json.loads(str(array)).items() if not is_volatile(k)}
            array = np.array(json.dumps(info, sort_keys=True, allow_nan=True))
        digest.update(json.dumps([name, str(array.dtype), list(array.shape)]).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def output_sha256(path: str | Path) -> str:
    suffix = Path(path).suffix
    if suffix == ".json":
        return record_sha256(path)
    if suffix == ".npz":
        return arrays_sha256(path)
    if suffix in (".parquet", ".csv"):
        return table_sha256(path)
    return file_sha256(path)  # NetCDF and anything else: the bytes


def study_hashes(study_dir: str | Path, folders=OUTPUT_FOLDERS) -> dict[str, str]:
    """``{relative path: canonical sha256}`` of every output file of a study directory.

    Hidden files are left out: Snakemake's ``.snakemake_timestamp`` markers in directory outputs
    and the ``.<name>.*.tmp`` files of writes that were killed (never at a final path).
    """
    root = Path(study_dir)
    hashes = {}
    for folder in folders:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                hashes[path.relative_to(root).as_posix()] = output_sha256(path)
    return hashes


def study_digest(study_dir: str | Path, folders=OUTPUT_FOLDERS) -> str:
    digest = hashlib.sha256()
    for name, value in study_hashes(study_dir, folders).items():
        digest.update(f"{name}\0{value}\n".encode())
    return digest.hexdigest()


def diff_hashes(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """Readable differences between two ``study_hashes`` results (empty when identical)."""
    lines = [f"missing: {k}" for k in sorted(set(expected) - set(found))]
    lines += [f"unexpected: {k}" for k in sorted(set(found) - set(expected))]
    lines += [f"differs: {k}" for k in sorted(set(expected) & set(found)) if expected[k] != found[k]]
    return lines
