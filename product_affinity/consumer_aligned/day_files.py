"""Partitioned storage any worker can read: tables as Parquet files, one folder per UTC day (hive layout).

    <root>/lines/day=2026-06-01/*.parquet                  the accepted purchase lines of the day, with their category
    <root>/day_product_pairs/day=2026-06-01/*.parquet      a per-day counts table (daily_counts), one folder per day
    ...

The root is a local folder (the default, beside the warehouse), or object storage given as a URL (`s3://bucket/…`,
`gs://…`, `abfs://…`, any protocol fsspec has a file system for, with that file system's package installed and its
credentials in the environment). DuckDB reads and writes such a root through the fsspec file system registered on
its connection (`register`), since its own S3 support is an extension downloaded at run time; Spark reads and writes
it through its Hadoop file system (`s3a://` with the cluster's hadoop-aws, which s3fs also answers to).

A writer (DuckDB's COPY, or a Spark job) writes the run's days into a staging folder of its own under
`<root>/_staging/`, then each day's folder replaces the one in place: a recounted day is replaced whole,
a day left with no rows loses its folder, and two runs over different days never write the same
folder (Spark's committer cannot share an output folder between concurrent jobs). Replacing one folder is
a rename on a local file system, and a copy then a delete on object storage (fsspec's `mv`), so there a reader may
see a day half moved; a reader that lists a table while a run replaces its days may see some days old and some
new in any case, so the pipeline reads only the days it has just written.
"""

from __future__ import annotations

import shutil
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import fsspec

from product_affinity.partitions import Days

LINES = "lines"
Root = Path | str  # a local folder, or the URL of a folder in object storage


def root_of(setting: str) -> Root:
    """A root as a setting gives it: a URL with a protocol (object storage) stays a URL; anything else is a folder."""
    return setting if _protocol(setting) else Path(setting.removeprefix("file://"))


def default_root(warehouse: Path | str) -> Path:
    """The local default: a folder beside the warehouse file (object storage in production)."""
    warehouse = Path(warehouse)
    return warehouse.with_name(f"{warehouse.stem}.partitions")


def _protocol(root: Root) -> str | None:
    text = str(root)
    return text.split("://", 1)[0] if "://" in text and not text.startswith("file://") else None


def _remote(root: Root) -> fsspec.AbstractFileSystem | None:
    """The fsspec file system of a root in object storage, or None for a local folder."""
    return fsspec.filesystem(_protocol(root)) if _protocol(root) else None


def register(conn: duckdb.DuckDBPyConnection, root: Root) -> None:
    """Let DuckDB on `conn` read and write `root`: nothing for a local folder; the root's fsspec file system otherwise."""
    fs = _remote(root)
    if fs is not None:
        with suppress(duckdb.InvalidInputException):  # registered on this connection before
            conn.register_filesystem(fs)


def recorded(root: Root) -> str:
    """The root as the counts file records it: a local folder by its absolute path, a URL as it is."""
    return str(root) if _protocol(root) else str(Path(root).resolve())


def join(root: Root, *parts: str) -> Root:
    """A path under a root, of the root's kind."""
    return Path(root, *parts) if _protocol(root) is None else "/".join([str(root).rstrip("/"), *parts])


def day_folder(root: Root, name: str, day) -> Root:
    return join(root, name, f"day={day.isoformat()}")


def held(root: Root, name: str, days: Days) -> list[Root]:
    """The folders of `days` that table `name` holds (a day with no rows has none)."""
    fs = _remote(root)
    is_dir = fs.isdir if fs is not None else lambda folder: folder.is_dir()
    return [folder for folder in (day_folder(root, name, day) for day in days) if is_dir(folder)]


@contextmanager
def staging(root: Root):
    """A fresh folder for one writer's output, on the same file system as `root` (so its days move in by rename);
    removed afterwards, with `_staging` itself once no other writer uses it."""
    fs = _remote(root)
    if fs is not None:  # object storage has no folders to make or leave empty: a fresh prefix is one
        folder = join(root, "_staging", uuid.uuid4().hex)
        try:
            yield folder
        finally:
            if fs.exists(folder):
                fs.rm(folder, recursive=True)
        return
    folder = Path(root) / "_staging" / uuid.uuid4().hex
    while True:
        try:
            folder.mkdir(parents=True)
            break
        except (FileNotFoundError, FileExistsError):  # `_staging` found or made, then removed by a writer leaving
            continue  # before this one's folder was in it
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with suppress(OSError):  # another writer's folder is still in it
            folder.parent.rmdir()


def replace_folder(written: Root, target: Root) -> None:
    """Make `target` hold what the folder `written` holds, or nothing if there is no such folder."""
    fs = _remote(target)
    if fs is not None:
        if fs.exists(target):
            fs.rm(target, recursive=True)
        if fs.isdir(written):
            fs.mv(written, target, recursive=True)
        return
    shutil.rmtree(target, ignore_errors=True)
    if Path(written).is_dir():
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(written).rename(target)


def replace_days(staged: Root, root: Root, name: str, days: Days) -> None:
    """Make `root`'s table `name` hold, for each of `days`, the folder written under `staged` (none if none was)."""
    for day in days:
        replace_folder(day_folder(staged, name, day), day_folder(root, name, day))
