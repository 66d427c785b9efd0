"""Atomic, validated outputs and provenance shared by every output of the pipeline."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TRACKED_PACKAGES = ("pymc", "pytensor", "arviz", "numpy", "scipy", "nutpie", "numba",
                    "pymc-extras", "snakemake", "pandas", "xarray")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; move it into place only on success.

    The final path therefore only ever holds a complete file: a write that raises, is
    interrupted or killed leaves the previous file (or none) there. A killed write can leave its
    hidden temporary file (``.<name>.<random>.tmp``) behind; the start-up check
    (:func:`integrity_check`) removes those. The data are flushed to disk before the rename, so
    a crash of the machine cannot leave an empty file under the final name either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


TMP_SUFFIX = ".tmp"

# netCDF-C writes and reads the study's small files 3-8x faster than h5netcdf (4 vs 35 ms per
# posterior file, 12 vs 36 ms per data set) and, like h5netcdf, records no HDF5 object times, so
# the files stay byte-for-byte reproducible; either engine reads the other's files.
NETCDF_ENGINE = "netcdf4"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub" or (value.dtype.kind == "f" and np.isfinite(value).all()):
            return value.tolist()  # already JSON's types: no walk through every element
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# wall-clock timings: the only content allowed to differ between two runs of the same study.
# A record key or table column is a timing if one of these names is a "_"-separated part of it
# (fit_seconds, median_fit_seconds, fit_seconds_q25, resample_fit_seconds, ...).
VOLATILE = ("fit_seconds", "wall_seconds", "setup_seconds")
_VOLATILE_NAME = re.compile(r"(?:^|_)(?:%s)(?:_|$)" % "|".join(VOLATILE))


def is_volatile(name: str) -> bool:
    return bool(_VOLATILE_NAME.search(str(name)))


class EncodedRecord:
    """A record's top-level values, each encoded as JSON once (keys sorted): a fit's record is
    written twice, as its JSON file and inside its netCDF file, and encoding its ~1000 floats
    took ~0.8 ms of writing a fit each time (profiled; benchmarks/README.md)."""

    def __init__(self, record: dict):
        payload = _jsonable(record)
        self._items = [(key, f"{json.dumps(key)}: {json.dumps(payload[key], sort_keys=True)}")
                       for key in sorted(payload)]

    def lines(self) -> str:
        """One top-level key per line: the keys stay easy to read and diff."""
        return ("{\n" + ",\n".join(item for _, item in self._items) + "\n}" if self._items
                else "{}")

    def document(self, drop=lambda key: False) -> str:
        """``json.dumps`` of the record without the keys ``drop`` names, ``sort_keys=True``,
        byte for byte (tested)."""
        return "{" + ", ".join(item for key, item in self._items if not drop(key)) + "}"


def write_json(payload: dict | EncodedRecord, path: str | Path) -> None:
    """``payload`` as JSON, one top-level key per line, each value written by json's C encoder
    (``indent`` would select its pure-Python encoder for the whole document, a fifth of writing
    a fit's files)."""
    encoded = payload if isinstance(payload, EncodedRecord) else EncodedRecord(payload)
    with atomic_path(path) as tmp:
        tmp.write_text(encoded.lines())


def write_arrays(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Named arrays as one uncompressed ``.npz`` file (numpy's own format, no pickles)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise OSError(f"record '{path}' is unreadable or truncated: {err}") from err


# ---------------------------------------------------------------------------------------------
# Start-up integrity check (called from workflow/rules/common.smk before Snakemake plans jobs).
#
# Outputs are written atomically, so a damaged file at a final path means damage from outside
# the pipeline (a full disk, a truncated copy or sync, a crash with an old writer, a manual
# edit). Snakemake only looks at file existence and mtimes, so it would happily reuse such a
# file. Deleting it is not enough either: Snakemake does not regenerate a missing intermediate
# file whose downstream outputs exist and are up to date (it treats it like a removed temp()
# file). So the check stops the run (dry runs too), names each damaged output and gives the
# public way to regenerate it with everything downstream: delete it, then run the same command
# with `--forcerun <outputs>` (Snakemake's own option; the check itself changes nothing, so it
# is safe while another run holds the directory). A damaged fit file names its whole chunk
# directory (Snakemake's unit of output). The check reads at most a few hundred bytes per
# NetCDF file, the footer of each parquet file and the small JSON records: well under a second
# for thousands of outputs.

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _hdf5_end_of_file(head: bytes) -> int | None:
    """The absolute end-of-file address recorded in an HDF5 superblock (None if unreadable)."""
    if len(head) < 9:
        return None
    version = head[8]
    if version in (0, 1):
        size_of_offsets = head[13] if len(head) > 13 else 0
        base_at = 24 if version == 0 else 28
    elif version in (2, 3):
        size_of_offsets = head[9]
        base_at = 12
    else:
        return None
    if size_of_offsets not in (2, 4, 8):
        return None
    eof_at = base_at + 2 * size_of_offsets
    if len(head) < eof_at + size_of_offsets:
        return None
    base = int.from_bytes(head[base_at:base_at + size_of_offsets], "little")
    return base + int.from_bytes(head[eof_at:eof_at + size_of_offsets], "little")


def netcdf_problem(path: str | Path) -> str | None:
    """Why a NetCDF-4 (HDF5) file is damaged, or None: the signature and the file size against
    the end-of-file address the HDF5 library wrote into the superblock when it closed the file.
    Catches empty, truncated and foreign files without opening them with HDF5."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(96)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if size == 0:
        return "empty (0 bytes)"
    if not head.startswith(HDF5_SIGNATURE):
        return "not an HDF5/NetCDF-4 file (no HDF5 signature)"
    end = _hdf5_end_of_file(head)
    if end is None:
        return "truncated or damaged HDF5 superblock"
    if size < end:
        return f"truncated ({size} of {end} bytes)"
    return None


def parquet_problem(path: str | Path) -> str | None:
    """Why a parquet file is damaged, or None: pyarrow must be able to read its footer (the
    metadata a truncated, empty or foreign file lacks); the data pages are not read."""
    import pyarrow.parquet as pq

    try:
        size = os.path.getsize(path)
        pq.read_metadata(path)
    except OSError as err:
        if err.strerror:  # the file system's error, not pyarrow's
            return f"unreadable ({err.strerror})"
        return f"truncated or not a parquet file ({size} bytes)"
    except ValueError:  # pyarrow's ArrowInvalid: no footer, bad magic bytes
        return f"truncated or not a parquet file ({size} bytes)"
    return None


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (read in blocks by hashlib)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def record_problem(path: str | Path, seed: int) -> tuple[str | None, dict | None]:
    """Why a fit record is damaged (or None) and the record itself."""
    try:
        record = json.loads(Path(path).read_text())
    except OSError as err:
        return f"unreadable ({err.strerror})", None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"truncated or not valid JSON ({err})", None
    if not isinstance(record, dict) or "status" not in record:
        return "not a fit record (no 'status')", None
    if record.get("seed") != seed:
        return f"holds seed {record.get('seed')!r}, expected {seed}", None
    return None, record


def chunk_problems(chunk_dir: str | Path, seeds) -> list[tuple[str, str]]:
    """``(file, why)`` for every damaged or missing file of a finished fit chunk directory.

    A chunk written for another chunk layout (its records list other ``chunk_seeds``, e.g.
    after a change of ``chunk_size``) is not damaged: Snakemake's params trigger refits it.
    """
    chunk_dir = Path(chunk_dir)
    try:
        present = set(os.listdir(chunk_dir))
    except OSError as err:
        return [(str(chunk_dir), f"unreadable ({err.strerror})")]
    seeds = list(seeds)
    problems, records = [], {}
    for seed in seeds:
        json_path = chunk_dir / f"seed-{seed}.json"
        if json_path.name not in present:
            problems.append((str(json_path), "missing (the chunk is incomplete)"))
            continue
        why, record = record_problem(json_path, seed)
        if why:
            problems.append((str(json_path), why))
        elif record.get("chunk_seeds", seeds) != seeds:
            return []
        else:
            records[seed] = record
    for seed, record in records.items():
        nc_path = chunk_dir / f"seed-{seed}.nc"
        if record["status"] == "ok":  # an ok fit always has draws; a failed one never does
            if nc_path.name not in present:
                problems.append((str(nc_path), "missing (its record says status 'ok')"))
            elif why := netcdf_problem(nc_path):
                problems.append((str(nc_path), why))
    for name in sorted(n for n in present if n.endswith(".npz")):
        try:  # stored results another cell reuses (FitResult.artifacts): must load
            read_arrays(chunk_dir / name)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            problems.append((str(chunk_dir / name), f"unreadable ({type(err).__name__})"))
    return problems


@dataclasses.dataclass(frozen=True)
class Damage:
    path: str  # the damaged file
    reason: str
    output: str  # the Snakemake output it belongs to: the file itself or its chunk directory

    def __str__(self) -> str:
        where = "" if self.output == self.path else f" [output {self.output}]"
        return f"{self.path}: {self.reason}{where}"


def find_damage(data_files=(), chunk_dirs: dict | None = None, parquet_files=(),
                skip=frozenset()) -> list[Damage]:
    """Damaged outputs among those that exist (a missing output is not damage), except the
    outputs in ``skip`` (e.g. ``marked_incomplete()``).

    ``data_files``: data set paths, or a mapping from each to the output that writes it (a
    simulate block's folder); a data set missing from a block folder that exists is damage, as
    Snakemake would not draw it again."""
    damage = []
    writers = data_files if isinstance(data_files, dict) else {p: p for p in data_files}
    for path, output in writers.items():
        if path in skip or output in skip:
            continue
        if os.path.exists(path):
            if why := netcdf_problem(path):
                damage.append(Damage(str(path), why, str(output)))
        elif output != path and os.path.isdir(output):
            damage.append(Damage(str(path), "missing from its block of data sets", str(output)))
    for chunk_dir, seeds in (chunk_dirs or {}).items():
        if chunk_dir in skip or not os.path.isdir(chunk_dir):
            continue
        for path, why in chunk_problems(chunk_dir, seeds):
            damage.append(Damage(path, why, str(chunk_dir)))
    for path in parquet_files:
        if path not in skip and os.path.exists(path) and (why := parquet_problem(path)):
            damage.append(Damage(str(path), why, str(path)))
    return damage


def marked_incomplete(workdir: str | Path = ".") -> set[str]:
    """The outputs Snakemake marked incomplete in ``workdir``: jobs it started and that never
    finished (e.g. killed with the whole session). Snakemake keeps one marker file per output
    under ``.snakemake/incomplete/``, named by the output's path in URL-safe base64 (split into
    ``@``-prefixed folders where a name would be too long). Such an output is not damage: the
    default profile's ``rerun-incomplete`` redoes its job, and without it Snakemake refuses to
    use it."""
    folder = Path(workdir) / ".snakemake" / "incomplete"
    if not folder.is_dir():
        return set()
    found = set()
    for marker in folder.rglob("*"):
        if not marker.is_file() or marker.name == "migration_underway":
            continue
        encoded = "".join(part.removeprefix("@") for part in marker.relative_to(folder).parts)
        try:
            found.add(base64.urlsafe_b64decode(encoded).decode())
        except (binascii.Error, UnicodeDecodeError):
            continue  # not a marker of this layout: its output is checked as usual
    return found


def stale_temporary_files(folders) -> list[Path]:
    """Temporary files of killed atomic writes (``.<name>.<random>.tmp``) under `folders`."""
    found = []
    for folder in folders:
        if os.path.isdir(folder):
            found += [p for p in Path(folder).rglob(f".*{TMP_SUFFIX}") if p.is_file()]
    return sorted(found)


def damage_message(damage: list[Damage]) -> str:
    """What was found and the two public steps that regenerate it: delete the damaged outputs
    (a missing output is not damage), then `--forcerun` them, which reruns their jobs and
    everything downstream (without it Snakemake would leave a deleted intermediate missing)."""
    outputs = sorted({d.output for d in damage})
    lines = [f"Integrity check: {len(damage)} damaged output file(s) in {len(outputs)} "
             "output(s):", *(f"  - {d}" for d in damage),
             "To regenerate them and everything downstream, delete them:",
             "  rm -rf " + " ".join(outputs),
             "then run the same command again with",
             "  --forcerun " + " ".join(outputs)]
    return "\n".join(lines)


def remove_stale_temporary_files(folders, log=print) -> list[Path]:
    """Delete the temporary files of killed atomic writes under `folders`. Call it only while
    holding the working directory (Snakemake's `onstart:` runs under its lock), so that no
    running job's file in progress is taken for a stale one."""
    stale = stale_temporary_files(folders)
    if stale:
        log(f"Removed {len(stale)} temporary file(s) of interrupted writes "
            f"({', '.join(str(p) for p in stale[:5])}{', ...' if len(stale) > 5 else ''})")
        for path in stale:
            path.unlink(missing_ok=True)
    return stale
