"""Attack: read personal data through the SLO results.

Malformed e-mail addresses and phone numbers are planted in the customer source (enough to fail
the e-mail rules, which are warnings: the batch is published). Any key holder may read /slo; the
SLO results are published with the snapshot and written as JSON and JUnit for CI. None of them
may carry a planted value: check results keep counts and source lines, never example values.
On the code before this test (d3ed5ac) Great Expectations' "unexpected" examples were served.
"""

import json
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from io import StringIO

import duckdb
import polars as pl
import pytest
from fastapi.testclient import TestClient

from product_affinity.cli import main
from product_affinity.delivery.rest import create_app
from product_affinity.governance.credentials import KeyStore
from product_affinity.publication import published_snapshot
from product_affinity.sources.sample import generate_sample

pytestmark = pytest.mark.slow


def _tables_as_text(database, schema: str) -> str:
    with duckdb.connect(str(database), read_only=True) as conn:
        names = [r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [schema]).fetchall()]
        assert names, f"no {schema} tables in {database}"
        return "\n".join(str(conn.execute(f"SELECT * FROM {schema}.{name}").fetchall()) for name in names)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("slo_pii")
    sources, warehouse = root / "sources", root / "warehouse.duckdb"
    generate_sample(sources, customers=300, products=60, orders=1_500, history_days=60, end=datetime.now(UTC).replace(tzinfo=None))
    frame = pl.read_csv(sources / "customer_info.csv", infer_schema=False)
    planted = []
    emails, phones = list(frame["email"]), list(frame["phone"])
    for i in range(0, len(frame), 8):  # 12.5% of the customers: malformed, and some shared by two customers
        emails[i] = f"leaky{i:04d}.at.nowhere" if i % 16 else "shared.leak@@nowhere"
        phones[i] = f"call-me-{i:04d}-secret"
        planted += [emails[i], phones[i]]
    frame.with_columns(email=pl.Series(emails), phone=pl.Series(phones)).write_csv(sources / "customer_info.csv")
    log = StringIO()
    with redirect_stdout(log), redirect_stderr(log):
        assert main(["run", "--sources", str(sources), "--warehouse", str(warehouse)]) == 0, log.getvalue()
    with duckdb.connect(str(published_snapshot(warehouse)), read_only=True) as conn:  # the values were published as data
        stored = {r[0] for r in conn.execute("SELECT email FROM source_aligned.customer UNION SELECT phone FROM source_aligned.customer").fetchall()}
        quarantined = conn.execute("SELECT string_agg(record, ' ') FROM source_aligned.quarantine").fetchone()[0]
    # every planted value arrived: accepted as data, or in a quarantined row the sample's own defects put there
    assert all(value in stored or value in quarantined for value in planted)
    return warehouse, sorted(set(planted)), log.getvalue(), root


def assert_none_in(text: str, planted: list[str], where: str) -> None:
    leaked = [value for value in planted if value in text]
    assert not leaked, f"{where} leaks {len(leaked)} planted value(s), e.g. {leaked[:3]}"


def test_the_attack_fails_the_email_rules(attacked):
    warehouse, _, _, _ = attacked
    with duckdb.connect(str(published_snapshot(warehouse)), read_only=True) as conn:
        failed = {r[0] for r in conn.execute("SELECT rule_id FROM quality.slo_results WHERE asset = 'source_aligned/customer' AND NOT passed").fetchall()}
    assert {"validity_email", "uniqueness_email"} <= failed  # the rules did see the planted values


def test_slo_over_rest_and_graphql_serves_no_planted_value(attacked):
    warehouse, planted, _, _ = attacked
    key = KeyStore(warehouse).issue("marta")  # any key holder
    with TestClient(create_app(warehouse)) as client:
        rest = client.get("/slo", headers={"Authorization": f"Bearer {key}"})
        graphql = client.post("/graphql", json={"query": "{ slo(runs: 5) }"}, headers={"Authorization": f"Bearer {key}"})
    assert rest.status_code == 200 and graphql.status_code == 200 and "errors" not in graphql.json(), graphql.text
    assert any(s["id"] == "validity_email" and s["status"] == "fail" for s in rest.json()["slos"])
    assert_none_in(rest.text, planted, "GET /slo")
    assert_none_in(json.dumps(graphql.json()), planted, "GraphQL slo")


def test_slo_results_and_the_published_quality_tables_hold_no_planted_value(attacked):
    warehouse, planted, _, _ = attacked
    assert_none_in(_tables_as_text(published_snapshot(warehouse), "quality"), planted, "the published snapshot's quality tables")
    assert_none_in(_tables_as_text(warehouse, "quality"), planted, "the working warehouse's quality.slo_results")


def test_slo_report_files_and_run_log_hold_no_planted_value(attacked):
    warehouse, planted, log, root = attacked
    out = StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        assert main(["slo", "--warehouse", str(warehouse), "--json", str(root / "slo.json"), "--junit", str(root / "slo.xml")]) == 1
    assert_none_in(out.getvalue(), planted, "the printed SLO report")
    assert_none_in((root / "slo.json").read_text(), planted, "the SLO report JSON")
    assert_none_in((root / "slo.xml").read_text(), planted, "the SLO report JUnit XML")
    assert_none_in(log, planted, "the run's log")
