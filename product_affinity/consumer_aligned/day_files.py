"""Partitioned storage any worker can read: tables as Parquet files, one folder per UTC day (hive layout).

    <root>/lines/day=2026-06-01/*.parquet                  the accepted purchase lines of the day, with their category
    <root>/day_product_pairs/day=2026-06-01/*.parquet      a per-day counts table (daily_counts), one folder per day
    ...

A writer (DuckDB's COPY, or a Spark job) writes the run's days into a staging folder of its own under
`<root>/_staging/`, then each day's folder replaces the one in place: a recounted day is replaced whole,
a day left with no rows loses its folder, and two runs over different days never write the same
folder (Spark's committer cannot share an output folder between concurrent jobs). Replacing one folder is
a rename on a local file system; a reader that lists a table while a run replaces its days may see some days
old and some new, so the pipeline reads only the days it has just written.
"""

from __future__ import annotations

import shutil
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

from product_affinity.partitions import Days

LINES = "lines"


def default_root(warehouse: Path | str) -> Path:
    """The local default: a folder beside the warehouse file (object storage in production)."""
    warehouse = Path(warehouse)
    return warehouse.with_name(f"{warehouse.stem}.partitions")


def day_folder(root: Path, name: str, day) -> Path:
    return Path(root) / name / f"day={day.isoformat()}"


def held(root: Path, name: str, days: Days) -> list[Path]:
    """The folders of `days` that table `name` holds (a day with no rows has none)."""
    return [folder for folder in (day_folder(root, name, day) for day in days) if folder.is_dir()]


@contextmanager
def staging(root: Path):
    """A fresh folder for one writer's output, on the same file system as `root` (so its days move in by rename);
    removed afterwards, with `_staging` itself once no other writer uses it."""
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


def replace_days(staged: Path, root: Path, name: str, days: Days) -> None:
    """Make `root`'s table `name` hold, for each of `days`, the folder written under `staged` (none if none was)."""
    for day in days:
        target, written = day_folder(root, name, day), day_folder(staged, name, day)
        shutil.rmtree(target, ignore_errors=True)
        if written.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            written.rename(target)
