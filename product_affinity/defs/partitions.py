"""The purchases' daily partitions: one per UTC day of purchased_at, from the contract's first day up to today.

Today is a partition (end_offset=1): a retailer's dashboard shows today's orders so far, and the day is
reloaded whole (delete + insert) by every run that touches it, so a partial day is replaced, never
appended twice. A backfill of any range runs as one run (BackfillPolicy.single_run): every step reads
its range from `context.partition_time_window` and replaces it in one statement.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

import dagster as dg

from product_affinity.contract.odcs import table
from product_affinity.partitions import Days

PURCHASE = table("purchase")
daily = dg.DailyPartitionsDefinition(start_date=PURCHASE.first_partition_day.isoformat(), end_offset=1, timezone="UTC")
one_run = dg.BackfillPolicy.single_run()
# Beta in Dagster 1.13: the warning, printed by every command that loads the definitions, tells a user nothing to do.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)


def days_of(context: dg.AssetExecutionContext) -> Days:
    """The run's partitions as the domain code takes them: first day, and the day after the last."""
    window = context.partition_time_window
    return Days(window.start.date(), window.end.date())


def range_tags(days: Days) -> dict[str, str]:
    """Run tags that make one run of the job cover `days` (its partitioned steps) and build everything downstream."""
    return {  # Dagster's tags for a run over a partition range (dagster._core.storage.tags)
        "dagster/asset_partition_range_start": days.first.isoformat(),
        "dagster/asset_partition_range_end": (days.end - timedelta(days=1)).isoformat(),
    }
