"""The Postgres port against the real server: each principal sees in PostgreSQL exactly what the API returns them,
personal data masked alike, row filters holding on totals, base tables and the masking key out of reach, and a
republication that never shows a reader a mix. Skipped when no PostgreSQL answers, unless CI is set."""

import hashlib
import secrets
import shutil
import threading
from collections import Counter
from contextlib import redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from product_affinity.cli import main
from product_affinity.delivery import postgres, postgres_load
from product_affinity.delivery.service import DeliveryService, _json_value
from product_affinity.semantic.access import AccessDenied
from product_affinity.governance.policies import access, policies, principal, readable_views
from product_affinity.governance.audit import AuditLog
from product_affinity.governance.credentials import Caller, masking_key
from product_affinity.publication import open_published, publish, published_snapshot
from product_affinity.semantic.model import Dimension, Mask
from product_affinity.semantic.loader import model
from product_affinity.semantic.compiler import condition, mask_sql
from product_affinity.semantic.query import Query

PREFIX = f"pa_t{secrets.token_hex(3)}_"  # roles are cluster-wide: this session's own
BASE_TABLES = [t.physical_name for t in postgres_load.published_tables()]
SPAIN_SPEND = "SELECT sum(quantity * unit_price) FROM source_aligned.purchase JOIN source_aligned.customer USING (customer_id) WHERE country = 'Spain'"


@pytest.fixture(scope="session")
def server(postgres_server) -> str:
    return postgres_server


@pytest.fixture(scope="session")
def databases(server):
    """Throwaway databases for this session; at the end they are dropped, and so are this session's roles."""
    made = []

    def new() -> str:
        made.append(f"product_affinity_test_{secrets.token_hex(4)}")
        return make_conninfo(server, dbname=made[-1])

    yield new
    with psycopg.connect(server, autocommit=True) as admin:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for (role,) in admin.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [PREFIX]).fetchall():
            admin.execute(f'DROP ROLE "{role}"')


@dataclass(frozen=True)
class Port:
    dsn: str
    warehouse: Path
    printed: str

    def login(self, who: str, **options) -> psycopg.Connection:
        return psycopg.connect(make_conninfo(self.dsn, user=f"{PREFIX}{who}"), **options)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


@pytest.fixture(scope="session")
def port(published_sample, databases) -> Port:
    """The shared sample, published once through the command line into this session's database."""
    dsn = databases()
    with redirect_stdout(StringIO()) as printed:
        assert main(["publish-postgres", "--dsn", dsn, "--warehouse", str(published_sample), "--role-prefix", PREFIX]) == 0
    return Port(dsn, published_sample, printed.getvalue())


# The sales view's rows are compared on a tenth of the orders (every row of it is compared in aggregate):
# comparing all 190k lines for every principal would take most of this file's time.
SLICES = {"sales": ("order_id", 2000)}


PAGE = 2_000  # rows per API page: a whole customer_360 row set is more than one answer may carry (MAX_RESULT_BYTES)


@pytest.fixture(scope="module")
def api_rows(published_sample):
    """What the API returns `who` for an ungrouped query over every dimension of `view` they may read: their
    columns, and the rows (as comparable tuples). Computed once per distinct answer of the policy engine."""
    service, answers = DeliveryService(published_sample), {}

    def rows(who: str, view_name: str) -> tuple[list[str], Counter]:
        granted = access(principal(who), view_name)
        view = granted.view
        dims = [n for n, vm in view.members.items() if isinstance(vm.member, Dimension) and n in granted.members]
        key = (view_name, tuple(dims), repr(granted.describe()))
        sliced = [{"member": f"{view_name}.{SLICES[view_name][0]}", "operator": "lt", "values": [SLICES[view_name][1]]}] \
            if view_name in SLICES else []
        if key not in answers:
            found, offset = Counter(), 0
            while True:
                query = Query(dimensions=[f"{view_name}.{d}" for d in dims], filters=sliced, ungrouped=True, limit=PAGE, offset=offset)
                page = service.load(Caller(principal(who), "test"), query, "postgres port test").rows
                found.update(comparable(row.values()) for row in page)
                if len(page) < PAGE:
                    break
                offset += PAGE
            answers[key] = found
        return dims, answers[key]

    return rows


def ask(warehouse: Path, who: str, query: dict) -> list[dict]:
    """The rows the API answers `who`."""
    return DeliveryService(warehouse).load(Caller(principal(who), "test"), Query.model_validate(query), "postgres port test").rows


def comparable(values) -> tuple:
    """A row as the API writes it (JSON values), hashable."""
    return tuple(tuple(v) if isinstance(v, list) else _json_value(v) for v in values)


def visible_columns(conn: psycopg.Connection, view: str) -> list[str]:
    """The view's columns this login holds a privilege on (what a BI tool lists)."""
    return [c for (c,) in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'product_affinity' AND table_name = %s "
        "ORDER BY ordinal_position", [view]).fetchall()]


@pytest.fixture(scope="module")
def sql(published_sample):
    with open_published(published_sample) as conn:
        yield lambda text: conn.execute(text).fetchall()


@pytest.mark.parametrize("who", list(policies().principals))
def test_each_principal_sees_in_postgres_exactly_what_the_api_returns(port, api_rows, who):
    with port.login(who, autocommit=True) as conn:
        for view in model().views:
            try:
                dims, expected = api_rows(who, view)
            except AccessDenied:
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"permission denied for view {view}"):
                    conn.execute(f"SELECT count(*) FROM product_affinity.{view}")
                assert visible_columns(conn, view) == []
                continue
            assert visible_columns(conn, view) == dims, view
            where = f"WHERE {SLICES[view][0]} < {SLICES[view][1]}" if view in SLICES else ""
            got = Counter(comparable(row) for row in conn.execute(f"SELECT {', '.join(dims)} FROM product_affinity.{view} {where}"))
            assert got == expected, f"{who} reads {view} differently in Postgres than through the API"
        if "sales" in readable_views(principal(who)):
            (api,) = ask(port.warehouse, who, {"measures": ["sales.lines", "sales.total_spend", "sales.buyers"]})
            lines, spend, buyers = conn.execute(
                "SELECT count(*), sum(quantity * unit_price), count(DISTINCT customer_id) FROM product_affinity.sales").fetchone()
            assert (lines, float(spend), buyers) == (api["sales.lines"], pytest.approx(api["sales.total_spend"]), api["sales.buyers"])


def test_a_group_without_the_view_or_the_column_is_refused(port):
    refused = {"storefront": ["SELECT count(*) FROM product_affinity.customer_360", "SELECT email FROM product_affinity.cross_sell",
                              "SELECT * FROM product_affinity.cross_sell"],
               "ana": ["SELECT income FROM product_affinity.customer_360", "SELECT rule_id FROM product_affinity.association_rules"]}
    for who, statements in refused.items():
        with port.login(who, autocommit=True) as conn:
            for statement in statements:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            assert conn.execute("SELECT count(*) FROM product_affinity.cross_sell").fetchone()[0] > 0


def test_personal_data_is_masked_unless_the_group_may_see_it(port, sql):
    clear = dict(sql("SELECT customer_id, email FROM source_aligned.customer WHERE email IS NOT NULL"))
    key = masking_key(port.warehouse)
    query = "SELECT customer_id, email, first_name, birth_year FROM product_affinity.customer_360 WHERE email IS NOT NULL"
    with port.login("marta") as marta, port.login("li") as li, port.login("steward") as steward:
        for customer, email, first_name, birth_year in marta.execute(query):
            assert email == f"***{clear[customer][clear[customer].index('@'):]}" != clear[customer]  # the domain only
            assert first_name == "***" and birth_year is None
        for customer, email, _, _ in li.execute(query):  # keyed hash: the deployment's key, the API's bytes
            assert email == hashlib.sha256((key + clear[customer]).encode()).hexdigest()[:20]
        assert {c: e for c, e, _, _ in steward.execute(query)} == clear
        definitions = steward.execute("SELECT string_agg(definition, '') FROM pg_views WHERE schemaname = 'product_affinity'").fetchone()[0]
        assert key not in definitions and "masking_key" in definitions


def test_row_filters_hold_on_totals(port, sql):
    spain, everyone = (float(sql(text)[0][0]) for text in (SPAIN_SPEND, "SELECT sum(quantity * unit_price) FROM source_aligned.purchase"))
    (api,) = ask(port.warehouse, "ana", {"measures": ["customer_360.customer_total_spend"]})
    assert api["customer_360.customer_total_spend"] == pytest.approx(spain) and spain < everyone
    with port.login("ana") as ana:
        (total,) = ana.execute("SELECT sum(total_spend) FROM product_affinity.customer_360").fetchone()
        assert float(total) == pytest.approx(spain)
        (spend, countries) = ana.execute("SELECT sum(quantity * unit_price), count(DISTINCT country) FROM product_affinity.sales").fetchone()
        assert float(spend) == pytest.approx(spain) and countries == 1
        recommended = {c for (c,) in ana.execute("SELECT DISTINCT customer_id FROM product_affinity.cross_sell")}
        assert recommended <= {c for (c,) in sql("SELECT customer_id FROM source_aligned.customer WHERE country = 'Spain'")}
    with port.login("jon") as jon:  # regional (Canada, no incomes) and marketing (incomes): incomes, of Canada only
        assert jon.execute("SELECT country, count(*), avg(income) IS NOT NULL FROM product_affinity.customer_360 GROUP BY 1").fetchall() \
            == [("Canada", sql("SELECT count(*) FROM source_aligned.customer WHERE country = 'Canada'")[0][0], True)]


@pytest.mark.parametrize("who", list(policies().principals))
def test_principals_cannot_reach_the_tables_the_key_or_the_owner(port, who):
    attempts = [*(f"SELECT count(*) FROM {t}" for t in BASE_TABLES),
                "SELECT * FROM product_affinity_private.masking_key", "SELECT * FROM product_affinity_private.publication",
                f"SET ROLE {PREFIX}owner", "CREATE TEMP TABLE probe (x int)", "CREATE TABLE public.probe (x int)"]
    with port.login(who, autocommit=True) as conn:
        for statement in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE schemaname IN ('source_aligned', 'consumer_aligned')").fetchone() == (0,)
        assert conn.execute("SHOW log_statement").fetchone() == ("all",)  # Postgres logs what a principal runs


def test_the_publication_is_printed_shown_and_audited(port):
    snapshot = published_snapshot(port.warehouse).name
    assert f"Published {snapshot}" in port.printed and f"-U {PREFIX}" in port.printed
    with port.login("storefront") as conn:
        assert conn.execute("SELECT snapshot FROM product_affinity.publication").fetchone() == (snapshot,)
    entry = [e for e in AuditLog(port.warehouse).entries() if e["path"] == "postgres publish"][-1]
    assert entry["outcome"] == "ok" and entry["snapshot"] == snapshot and entry["rows"] > 0
    assert entry["policies"]["logins"][f"{PREFIX}jon"] == [f"{PREFIX}group_{g}" for g in principal("jon").groups]


def test_a_republication_undoes_tampering_with_the_roles(port):
    with port.admin() as admin:
        admin.execute(f"GRANT {PREFIX}owner TO {PREFIX}marta")
        admin.execute(f"GRANT {PREFIX}group_data_steward TO {PREFIX}ana")
        admin.execute(f"ALTER ROLE {PREFIX}li BYPASSRLS")
        postgres.publish(port.warehouse, port.dsn, PREFIX)
        memberships = set(admin.execute(
            """SELECT m.rolname, r.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid
               JOIN pg_roles m ON m.oid = a.member WHERE starts_with(m.rolname, %s)""", [PREFIX]).fetchall())
        assert admin.execute("SELECT rolbypassrls FROM pg_roles WHERE rolname = %s", [f"{PREFIX}li"]).fetchone() == (False,)
    assert memberships == {(f"{PREFIX}{p.name}", f"{PREFIX}group_{g}") for p in policies().principals.values() for g in p.groups}


def test_a_republication_waits_for_open_readers_and_never_shows_a_mix(published_sample, databases, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"  # a copy, so the shared sample stays as it is
    shutil.copyfile(published_sample, warehouse)
    with duckdb.connect(str(warehouse)) as conn:
        publish(conn, warehouse, "pg-before")
    port = Port(databases(), warehouse, "")
    postgres.publish(warehouse, port.dsn, PREFIX)
    totals = "SELECT (SELECT sum(total_spend) FROM product_affinity.customer_360), (SELECT count(*) FROM product_affinity.sales)"
    with port.login("marta") as reader, port.login("marta") as stale, port.login("steward", autocommit=True) as other:
        reader.isolation_level = stale.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        stale.execute("SELECT 1")  # its snapshot is taken now, before the republication, but it reads the views only after
        before = reader.execute(totals).fetchone()  # the reader's transaction stays open
        with duckdb.connect(str(warehouse)) as conn:  # the next snapshot: every customer's spend doubled, half the orders gone
            conn.execute("UPDATE consumer_aligned.customer_metrics SET total_spend = total_spend * 2")
            conn.execute("DELETE FROM source_aligned.purchase WHERE order_id % 2 = 0")
            publish(conn, warehouse, "pg-after")
        waiting, outcome = threading.Event(), {}

        def republish():
            try:
                outcome["done"] = postgres.publish(warehouse, port.dsn, PREFIX, wait=120, on_busy=lambda readers: waiting.set())
            except Exception as error:  # noqa: BLE001 (reported by the assertion below)
                outcome["error"] = error

        publisher = threading.Thread(target=republish, daemon=True)
        publisher.start()
        assert waiting.wait(60), f"the publisher never met the reader's open transaction: {outcome}"
        assert reader.execute(totals).fetchone() == before  # still the publication it began with, whole
        other.execute("SET lock_timeout = '10s'")  # a new reader is not queued behind the waiting publisher
        assert other.execute(totals).fetchone() == before
        reader.commit()
        publisher.join(120)
        assert outcome.get("done") and outcome["done"].attempts > 1, outcome
        spend, lines = other.execute(totals).fetchone()
        assert spend == 2 * before[0] and 0 < lines < before[1]
        with pytest.raises(psycopg.errors.SerializationFailure, match="republished"):  # not the new tables seen empty
            stale.execute(totals)


def test_nothing_published_or_no_server_is_a_clear_refusal(tmp_path, capsys, published_sample):
    assert main(["publish-postgres", "--warehouse", str(tmp_path / "warehouse.duckdb"), "--role-prefix", PREFIX]) == 2
    assert "nothing has been published" in capsys.readouterr().err
    unreachable = "postgresql://postgres@127.0.0.1:1/product_affinity"
    assert main(["publish-postgres", "--dsn", unreachable, "--warehouse", str(published_sample), "--role-prefix", PREFIX]) == 2
    assert "Cannot publish to PostgreSQL" in capsys.readouterr().err
    assert AuditLog(published_sample).entries()[-1]["outcome"] == "error"


CONDITIONS = [
    ("s", "string", "equals", ["Spain", "Peru"]), ("s", "string", "notEquals", ["Spain"]), ("s", "string", "contains", ["PA"]),
    ("s", "string", "notContains", ["pa"]), ("s", "string", "startsWith", ["Sp"]), ("s", "string", "endsWith", ["ñ"]),
    ("s", "string", "set", []), ("s", "string", "notSet", []), ("n", "number", "gt", [2]), ("n", "number", "lte", ["1.5"]),
    ("n", "number", "equals", [3]), ("t", "time", "inDateRange", ["2024-01-01", "2024-01-31"]),
    ("t", "time", "notInDateRange", ["2024-01-01", "2024-01-31"]), ("t", "time", "beforeDate", ["2024-02-01"]),
    ("t", "time", "afterDate", ["2024-01-31"]), ("l", "list", "equals", ["a", "z"]), ("l", "list", "notEquals", ["a"]),
]
ROWS = "(1, 'Spain', 1.5, TIMESTAMP '2024-01-31 23:00:00', ['a', 'b']), (2, 'España y Perú', 3.0, TIMESTAMP '2024-02-01 00:00:00', ['c']), " \
       "(3, 'Peru', 2.5, TIMESTAMP '2023-12-31 00:00:00', ['a']), (4, NULL, NULL, NULL, NULL), (5, 'añ', 0.0, TIMESTAMP '2024-01-01 00:00:00', [])"


def test_row_filter_conditions_and_masks_mean_the_same_in_duckdb_and_postgres(server):
    duck = duckdb.connect()
    duck.execute(f"CREATE TABLE x AS SELECT * FROM (VALUES {ROWS}) AS v(id, s, n, t, l)")
    with psycopg.connect(server, autocommit=True) as pg:
        pg.execute("CREATE TEMP TABLE x (id int, s text, n double precision, t timestamp, l text[])")
        pg.execute(f"INSERT INTO x VALUES {ROWS.replace('[', 'ARRAY[').replace('ARRAY[]', 'ARRAY[]::text[]')}")
        literal = lambda v: psycopg.sql.Literal(v).as_string(pg)  # noqa: E731
        for column, kind, operator, values in CONDITIONS:
            params = {}

            def bind(value):
                params[f"p{len(params)}"] = value
                return f"$p{len(params) - 1}"

            in_duckdb = condition(column, kind, operator, values, column, bind)
            in_postgres = condition(column, kind, operator, values, column, literal, "postgres")
            expected = duck.execute(f"SELECT id FROM x WHERE {in_duckdb} ORDER BY id", params).fetchall()
            assert pg.execute(f"SELECT id FROM x WHERE {in_postgres} ORDER BY id").fetchall() == expected, (operator, values)
        masks = [Mask("hash"), Mask("redact"), Mask("partial", show_first=1, show_from="@"), Mask("partial", show_last=2)]
        for mask in masks:
            duck_sql = f"SELECT id, {mask_sql('s', mask, 'string', '$salt')} FROM x ORDER BY id"
            pg_sql = f"SELECT id, {mask_sql('s', mask, 'string', literal('k€y'), 'postgres')} FROM x ORDER BY id"
            salt = {"salt": "k€y"} if mask.kind == "hash" else {}  # DuckDB refuses a parameter the statement does not use
            assert pg.execute(pg_sql).fetchall() == duck.execute(duck_sql, salt).fetchall(), mask
