"""The data contract, loaded once: every module asks it for columns and types instead of restating them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

CONTRACT_PATH = Path(__file__).with_name("product_affinity.odcs.yaml")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool
    unique: bool
    primary_key: bool
    pii: bool
    description: str


@dataclass(frozen=True)
class Table:
    name: str
    physical_name: str
    description: str
    columns: tuple[Column, ...]
    custom: dict[str, str]

    @property
    def schema(self) -> str:
        return self.physical_name.split(".")[0]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.primary_key]

    @property
    def source_file(self) -> str | None:
        return self.custom.get("sourceFile")

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _column(prop: dict) -> Column:
    return Column(
        name=prop["name"],
        type=prop["physicalType"],
        required=bool(prop.get("required", False)),
        unique=bool(prop.get("unique", False)),
        primary_key=bool(prop.get("primaryKey", False)),
        pii=prop.get("classification") == "pii",
        description=prop.get("description", ""),
    )


@cache
def contract() -> dict:
    return yaml.safe_load(CONTRACT_PATH.read_text())


@cache
def tables() -> dict[str, Table]:
    return {
        entry["name"]: Table(
            name=entry["name"],
            physical_name=entry["physicalName"],
            description=entry.get("description", ""),
            columns=tuple(_column(p) for p in entry["properties"]),
            custom={c["property"]: c["value"] for c in entry.get("customProperties", [])},
        )
        for entry in contract()["schema"]
    }


def table(name: str) -> Table:
    return tables()[name]
