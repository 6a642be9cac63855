"""Daily partitions as the domain code sees them: a range of UTC days, and which days a full run must load.

The Dagster wiring (defs/partitions.py) maps its partition windows onto `Days`; the command line and
the tests ask `days_to_load` which days a run over "everything" covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

from product_affinity.contract.odcs import table
from product_affinity.run_lock import run_lock


@dataclass(frozen=True)
class Days:
    """The daily partitions a run loads: UTC days from `first` up to, not including, `end`."""

    first: date
    end: date

    @property
    def last(self) -> date:
        return self.end - timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.first}" if self.last == self.first else f"{self.first}..{self.last}"

    def __iter__(self):
        """Each day, in order: the folders of a day-partitioned file layout are named one day at a time."""
        return (self.first + timedelta(days=i) for i in range((self.end - self.first).days))

    def chunks(self, days: int) -> list[Days]:
        """These days cut into consecutive ranges of at most `days` days: the pieces a fanned-out count runs apart."""
        starts = range(0, (self.end - self.first).days, days)
        return [Days(self.first + timedelta(days=i), min(self.end, self.first + timedelta(days=i + days))) for i in starts]


def file_days(sources: Path) -> tuple[date, date] | None:
    """First and last UTC day of the lines in the purchase file (lines whose time does not parse are left out)."""
    path = Path(sources) / table("purchase").source_file
    if not path.is_file():
        return None  # the run fails naming the missing file
    path = str(path).replace("'", "''")
    with duckdb.connect() as conn:
        first, last = conn.execute(
            f"""SELECT min(t)::DATE, max(t)::DATE FROM (
                SELECT try_strptime(purchased_at, '%Y-%m-%d %H:%M:%S') AS t
                FROM read_csv('{path}', all_varchar = true, header = true, ignore_errors = true))"""
        ).fetchone()
    return None if first is None else (first, last)


def loaded_days(warehouse: Path) -> tuple[date, date] | None:
    """First and last day already loaded into the working warehouse (None when there is none yet)."""
    if not Path(warehouse).exists():
        return None
    t = table("purchase")
    with run_lock(warehouse):  # WarehouseBusy while another run holds it: opening the file could fail its next step
        try:
            conn = duckdb.connect(str(warehouse), read_only=True)
        except duckdb.IOException:  # a process other than a run has it open: the run fails on it with a clear message
            return None
        with conn:
            held = conn.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [t.schema, t.name]
            ).fetchone()[0]
            if not held:
                return None
            first, last = conn.execute(f"SELECT min({t.partition_column})::DATE, max({t.partition_column})::DATE FROM {t.physical_name}").fetchone()
    return None if first is None else (first, last)


def days_to_load(today: date, *ranges: tuple[date, date] | None) -> Days:
    """Every day a run over everything must load: the days of the sources and those already loaded (a day that left
    the sources must be emptied), within the partitions (the contract's first day to today)."""
    first_partition = table("purchase").first_partition_day
    known = [r for r in ranges if r is not None]
    if not known:
        return Days(today, today + timedelta(days=1))
    first = max(first_partition, min(r[0] for r in known))
    last = min(today, max(r[1] for r in known))
    return Days(min(first, last), last + timedelta(days=1))


def all_days(sources: Path, warehouse: Path, database: str | None = None, today: date | None = None) -> Days:
    """The days a run over everything loads: those of the source (the files in `sources`, or the database) and those
    already in `warehouse`."""
    from datetime import UTC, datetime

    if database:
        from product_affinity.sources.database import purchase_days

        source = purchase_days(database)
    else:
        source = file_days(sources)
    return days_to_load(today or datetime.now(UTC).date(), source, loaded_days(warehouse))
