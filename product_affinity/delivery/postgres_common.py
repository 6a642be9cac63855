"""The Postgres port: names and errors every part of it shares: schemas, where to connect, what a failed publication raises."""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict



DSN_VARIABLE = "PRODUCT_AFFINITY_POSTGRES_DSN"


FALLBACK_DSN = "postgresql://postgres@127.0.0.1:5432/product_affinity"


VIEWS = "product_affinity"


PRIVATE = "product_affinity_private"


STAGING = "_next"  # suffix of the schemas a publication loads before it swaps them in


PUBLICATION_VIEW = "publication"


APPLICATION = "product-affinity publish-postgres"


class PublishError(RuntimeError):
    """Nothing was published; readers see what they saw before."""


class ReadersBusy(PublishError):
    """Readers held the published views in open transactions for longer than the publisher would wait."""


def default_dsn() -> str:
    return os.environ.get(DSN_VARIABLE, FALLBACK_DSN)


def safe_dsn(dsn: str) -> str:
    """Where a DSN points, as a URL without password or options: fit for messages and the audit log."""
    parts = conninfo_to_dict(dsn)
    user, port = (f"{parts['user']}@" if parts.get("user") else ""), (f":{parts['port']}" if parts.get("port") else "")
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"

