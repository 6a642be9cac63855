"""The PostgreSQL operational source against the real server: the sample written into the database and loaded
incrementally by dlt gives the same source-aligned tables as the same sample read from files; a day added with
`generate --add-days 1` (new orders, corrected prices, changed e-mails, late lines) is merged, not duplicated, seen by
the watermark sensor, and published by the run it requests; every staged row is accepted or quarantined.
Skipped when no PostgreSQL answers, unless CI is set (then it fails)."""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from product_affinity.cli import main
from product_affinity.contract.odcs import table
from product_affinity.defaults import SOURCE_DSN_VARIABLE
from product_affinity.definitions import build_definitions
from product_affinity.publication import published_snapshot
from product_affinity.sources.database import SOURCES, table_name, watermark
from product_affinity.sources.sample import LATE_LINES, PRICE_CORRECTIONS
from product_affinity.sources.staging import staging_database
from tests.conftest import rows_apart, source_aligned_run, undeclared_tables

SIZE = ["--customers", "300", "--products", "60", "--orders", "3000", "--history-days", "60"]  # each day is a partition a run records
DEFECTS_A_DATABASE_CANNOT_HOLD = ("missing_key", "duplicate_key", "bad_type")  # keys and types are enforced there


@pytest.fixture(scope="module")
def database(postgres_server) -> str:
    """A database of this module's own, dropped at the end; skip (fail under CI) without a server."""
    server = postgres_server
    name = f"pa_pgsource_test_{secrets.token_hex(4)}"
    yield make_conninfo(server, dbname=name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def stale_end() -> str:
    """A sample end 36 hours ago: one more day then fits before now, and that day makes the sample fresh."""
    return (datetime.now(UTC) - timedelta(hours=36)).replace(tzinfo=None, microsecond=0).isoformat()


def cli(*args: str) -> tuple[int, str, str]:
    with redirect_stdout(StringIO()) as out, redirect_stderr(StringIO()) as err:
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def differences(left: Path, right: Path, name: str) -> tuple[int, int]:
    """Rows of a source-aligned table in one warehouse and not the other, both ways (EXCEPT ALL)."""
    return rows_apart(left, right, table(name).physical_name)


def query(warehouse: Path, statement: str, parameters: list | None = None) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(statement, parameters).fetchall()


def staged(warehouse: Path, statement: str, parameters: list | None = None) -> list[tuple]:
    """A query on the staging file dlt loads for this warehouse (`staging.<table>`)."""
    return query(staging_database(warehouse), statement, parameters)


def accounting(warehouse: Path) -> dict[str, tuple[int, int, int]]:
    """Per source: (rows staged, rows accepted, rows quarantined)."""
    return {name: (staged(warehouse, f"SELECT count(*) FROM staging.{table_name(name)}")[0][0],
                   query(warehouse, f"SELECT count(*) FROM {table(name).physical_name}")[0][0],
                   query(warehouse, "SELECT count(*) FROM source_aligned.quarantine WHERE source = ?",
                         [table(name).source_file])[0][0])
            for name in SOURCES}


@pytest.mark.slow
def test_database_source_equals_files_and_moves_incrementally(database, tmp_path):
    # The same sample, in files and in the database.
    end = stale_end()
    files, from_files, from_db = tmp_path / "sources", tmp_path / "files" / "w.duckdb", tmp_path / "db" / "w.duckdb"
    assert cli("generate", "--out", str(files), "--end", end, *SIZE)[0] == 0
    code, out, err = cli("generate", "--postgres", database, "--end", end, *SIZE)
    assert code == 0, err
    assert "left out" in out  # the file defects a keyed, typed table cannot hold

    # The sample is 36 hours old, so the blocking freshness check stops both first runs before publication (exit 1):
    # the source-aligned tables are built all the same.
    cli("run", "--sources", str(files), "--warehouse", str(from_files))
    from_db.parent.mkdir()
    with duckdb.connect(str(from_db)) as conn:  # where staging was before it had a file of its own: not to be published
        conn.execute("CREATE SCHEMA staging; CREATE TABLE staging.customer_info AS SELECT 'raw@example.com' AS email")
    os.environ[SOURCE_DSN_VARIABLE] = database  # the source chosen by the environment, as a deployment would
    try:
        cli("run", "--warehouse", str(from_db))
    finally:
        del os.environ[SOURCE_DSN_VARIABLE]
    for name in SOURCES:
        assert differences(from_files, from_db, name) == (0, 0), name
    quarantined = "SELECT reason, count(*) FROM source_aligned.quarantine GROUP BY ALL ORDER BY ALL"
    assert query(from_db, quarantined) == [r for r in query(from_files, quarantined)
                                           if r[0] not in DEFECTS_A_DATABASE_CANNOT_HOLD]
    assert all(staged == accepted + rejected for staged, accepted, rejected in accounting(from_db).values())

    # The watermark sensor, looking once, then after a day is added to the database.
    defs = build_definitions(files, from_db, database=database)
    sensor = defs.resolve_sensor_def("database_watermark")
    seen = sensor.evaluate_tick(dg.build_sensor_context(cursor=None, definitions=defs))
    quiet = sensor.evaluate_tick(dg.build_sensor_context(cursor=seen.cursor, definitions=defs))
    assert quiet.run_requests == [] and "no table's updated_at moved" in quiet.skip_message
    lines_before = staged(from_db, "SELECT count(*) FROM staging.purchase")[0][0]
    code, out, err = cli("generate", "--postgres", database, "--add-days", "1")
    assert code == 0, err
    assert cli("generate", "--out", str(files), "--add-days", "1")[0] == 0  # the same move, in the files
    moved = sensor.evaluate_tick(dg.build_sensor_context(cursor=quiet.cursor, definitions=defs))
    assert len(moved.run_requests) == 1
    assert moved.run_requests[0].tags["product_affinity/changed"] == "customer_info,purchase"

    # The run the sensor requested, through the real job: it loads only what changed, merges it, and publishes.
    request = moved.run_requests[0]
    result = defs.resolve_job_def("product_affinity").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=request.tags, run_config=request.run_config, raise_on_error=False)
    assert result.success
    loaded = [e for e in result.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey(["staging", "purchase"])][0]
    new_lines = int(out.split(": ")[1].split(" new purchase lines")[0].replace(",", ""))
    assert loaded.materialization.metadata["rows_loaded"].value == new_lines + PRICE_CORRECTIONS  # not the history
    lines = staged(from_db, "SELECT count(*), count(DISTINCT (order_id, line_number)) FROM staging.purchase")[0]
    assert lines == (lines_before + new_lines, lines_before + new_lines)  # updates merged, not duplicated
    published = published_snapshot(from_db)
    newest = query(published, "SELECT max(purchased_at) FROM source_aligned.purchase")[0][0]
    assert newest > datetime.fromisoformat(end)  # the new day is published
    assert undeclared_tables(published) == set()  # neither the staged rows nor dlt's state
    assert all(staged == accepted + rejected for staged, accepted, rejected in accounting(from_db).values())
    assert watermark(database)["purchase"] > end

    # And the moved database still equals the moved files (built by the files' source-aligned assets alone: only
    # those tables are compared).
    source_aligned_run(files, from_files, dg.DagsterInstance.ephemeral())
    for name in SOURCES:
        assert differences(from_files, from_db, name) == (0, 0), name
    # Lines of purchases up to the sample's latest one written after the sample's end. (Counting the lines of orders
    # that kept an older line missed a corrected line that was its order's only one; counting up to the sample's end,
    # the new day's first orders, placed after the latest purchase but before the end, when the sample's last order
    # was a while before it: two flaky counts.)
    latest = out.split(" day(s) after ")[1][:19]  # the sample's latest purchase, as generate --add-days printed it
    late_lines = staged(from_db, """SELECT count(*) FROM staging.purchase
        WHERE updated_at > ?::TIMESTAMP AND purchased_at <= ?::TIMESTAMP""", [end, latest])[0][0]
    assert late_lines == LATE_LINES + PRICE_CORRECTIONS  # late lines of old orders, and the corrected old lines


def test_a_database_that_is_not_there_is_refused_clearly(tmp_path):
    dsn = "postgresql://postgres@127.0.0.1:1/nowhere"
    code, _, err = cli("run", "--postgres", dsn, "--warehouse", str(tmp_path / "w.duckdb"))
    assert code == 2 and "cannot connect to the operational database postgresql://127.0.0.1:1/nowhere" in err
    assert not (tmp_path / "w.duckdb").exists()
    code, _, err = cli("generate", "--postgres", dsn, "--add-days", "1")
    assert code == 2 and "cannot connect" in err
    code, _, err = cli("generate", "--postgres", dsn)
    assert code == 2 and "cannot connect to the operational database's server" in err


@pytest.mark.slow
def test_a_new_staging_file_gets_a_full_load_even_where_an_old_cursor_is_left(database, tmp_path):
    """Deleting the staging file (to reload the source) must not leave dlt loading only rows newer than the cursor
    still in its working folder: dlt finds no state in the new file and loads everything (docs/sources.md relies on
    it). Deleting the warehouse alone keeps what was staged: its rebuild reads the staging file."""
    from product_affinity.sources.staging import dlt_pipeline, dlt_source, staged_tables

    end = stale_end()
    assert cli("generate", "--postgres", database, "--end", end, *SIZE)[0] == 0
    warehouse = tmp_path / "w.duckdb"
    dlt_pipeline(warehouse).run(dlt_source(database, staged_tables(warehouse)))
    full = staged(warehouse, "SELECT count(*) FROM staging.purchase")[0][0]
    assert not warehouse.exists()  # dlt wrote the staging file alone
    assert cli("generate", "--postgres", database, "--add-days", "1")[0] == 0
    staging_database(warehouse).unlink()  # the working folder next to it, with the cursor, is left behind
    dlt_pipeline(warehouse).run(dlt_source(database, staged_tables(warehouse)))
    assert staged(warehouse, "SELECT count(*) FROM staging.purchase")[0][0] > full
    with psycopg.connect(database) as conn:
        assert staged(warehouse, "SELECT count(*) FROM staging.purchase")[0][0] == conn.execute(
            "SELECT count(*) FROM purchase").fetchone()[0]


def test_a_table_not_staged_yet_is_appended_and_a_staged_one_merged(database, tmp_path):
    """A first load is appended (dlt's merge of 33.4M lines took 33 s and 8.8 GB, its append 12.5 s and 1 GB), and only
    a table the staging file does not hold and the database keys on the contract's key: a staged one is merged, or a
    second load would duplicate its rows (the update test below checks the rows themselves)."""
    from product_affinity.sources.staging import dlt_pipeline, dlt_source, staged_tables

    assert cli("generate", "--postgres", database, "--end", stale_end(), *SIZE)[0] == 0
    warehouse = tmp_path / "w.duckdb"
    names = {table_name(name) for name in SOURCES}

    def dispositions(source) -> dict[str, str]:
        return {name: source.resources[name].write_disposition for name in names}

    assert staged_tables(warehouse) == set()
    assert dispositions(dlt_source(database, staged_tables(warehouse))) == dict.fromkeys(names, "append")
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("dlt").addHandler(handler)
    try:
        dlt_pipeline(warehouse).run(dlt_source(database, staged_tables(warehouse)))
    finally:
        logging.getLogger("dlt").removeHandler(handler)
    assert staged_tables(warehouse) >= names
    # ConnectorX's batches say decimal(38,10) and nullable: the reflected types are kept, without a warning per batch
    assert not [message for message in logged if "hints were different" in message]
    assert staged(warehouse, "SELECT data_type, is_nullable FROM information_schema.columns WHERE table_schema = "
                  "'staging' AND table_name = 'product' AND column_name IN ('product_id', 'list_price') "
                  "ORDER BY column_name") == [("DECIMAL(12,2)", "YES"), ("BIGINT", "NO")]
    assert dispositions(dlt_source(database, staged_tables(warehouse))) == dict.fromkeys(names, "merge")
    with duckdb.connect(str(staging_database(warehouse))) as conn:
        conn.execute("DROP TABLE staging.product")
    assert dispositions(dlt_source(database, staged_tables(warehouse))) == {**dict.fromkeys(names, "merge"), "product": "append"}
    assert dispositions(dlt_source(database)) == dict.fromkeys(names, "merge")  # as the definitions describe it
    # A table the database does not key on the contract's key may hold a key twice: merged even when not staged yet,
    # since the ingestion does not look for repeated keys in a staged table.
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ALTER TABLE purchase DROP CONSTRAINT purchase_pkey")
        assert dispositions(dlt_source(database, set())) == {**dict.fromkeys(names, "append"), "purchase": "merge"}
        conn.execute("ALTER TABLE purchase ADD PRIMARY KEY (line_number, order_id)")  # the key, in another order
        assert dispositions(dlt_source(database, set())) == dict.fromkeys(names, "append")


def test_the_rows_are_read_where_libpq_connects(database):
    """ConnectorX parses only a postgresql:// URL: the one it is given names the server libpq reaches for the DSN,
    a socket directory included (a DSN with no host), with the same user and database, and libpq's sslmode; a DSN
    asking for a certificate check, which ConnectorX cannot make, is refused."""
    import connectorx

    from product_affinity.sources.database import DatabaseSourceError, create_database, reading_url

    create_database(database)
    asked = "SELECT current_database() AS db, current_user AS who, coalesce(inet_server_addr()::text, 'socket') AS via"
    without_host = make_conninfo(**{k: v for k, v in conninfo_to_dict(database).items() if k not in ("host", "hostaddr")})
    assert reading_url(make_conninfo(database, sslmode="disable")).endswith("?sslmode=disable")
    with pytest.raises(DatabaseSourceError, match="sslmode=verify-full|SSL"):  # refused, by libpq or by reading_url
        reading_url(make_conninfo(database, sslmode="verify-full"))
    read = 0
    for dsn in (database, without_host):
        try:
            with psycopg.connect(dsn) as conn:
                expected = [dict(zip(("db", "who", "via"), conn.execute(asked).fetchone()))]
        except psycopg.OperationalError:
            assert dsn == without_host, "the test database must answer"
            continue  # no server on the default socket here: only the DSN as given is checked
        assert connectorx.read_sql(reading_url(dsn), asked, return_type="arrow").to_pylist() == expected
        read += 1
    assert read >= 1


def test_an_update_is_merged_and_a_hard_delete_is_not_seen(database, tmp_path):
    """What docs/sources.md promises of the incremental load: the latest version of an updated row, once; and what it
    says it cannot do: a row deleted at the source stays staged (no updated_at tells of it)."""
    from product_affinity.sources.staging import dlt_pipeline, dlt_source, staged_tables

    end = stale_end()
    assert cli("generate", "--postgres", database, "--end", end, *SIZE)[0] == 0
    warehouse = tmp_path / "w.duckdb"
    dlt_pipeline(warehouse).run(dlt_source(database, staged_tables(warehouse)))
    with psycopg.connect(database) as conn:
        product_id, price = conn.execute("SELECT product_id, list_price FROM product ORDER BY product_id LIMIT 1").fetchone()
        conn.execute("UPDATE product SET list_price = list_price + 1, updated_at = %s WHERE product_id = %s",
                     [datetime.now(UTC).replace(tzinfo=None), product_id])
        deleted = conn.execute("DELETE FROM purchase WHERE (order_id, line_number) = "
                               "(SELECT order_id, line_number FROM purchase ORDER BY 1, 2 LIMIT 1) "
                               "RETURNING order_id, line_number").fetchone()
        rows = conn.execute("SELECT count(*) FROM purchase").fetchone()[0]
    dlt_pipeline(warehouse).run(dlt_source(database, staged_tables(warehouse)))
    assert staged(warehouse, "SELECT list_price FROM staging.product WHERE product_id = ?", [product_id]) == [(price + 1,)]
    assert staged(warehouse, "SELECT count(*) = count(DISTINCT product_id) FROM staging.product") == [(True,)]
    assert staged(warehouse, "SELECT count(*) FROM staging.purchase WHERE order_id = ? AND line_number = ?",
                 list(deleted)) == [(1,)]  # still staged
    assert staged(warehouse, "SELECT count(*) FROM staging.purchase")[0][0] == rows + 1


def test_the_incremental_load_is_planned_on_the_tables_statistics(database):
    """What dlt asks of the purchase lines once written (the lines updated after the last load's cursor, here a day's)
    is planned knowing how few they are, so that at scale PostgreSQL reads them by the updated_at index, not by a scan
    of every line: the sample's tables are analysed as they are written, since autovacuum may not have done it
    before the first load (or ever: it is off on some servers). Unanalysed, the planner takes a third of the table."""
    assert cli("generate", "--postgres", database, "--end", stale_end(), *SIZE)[0] == 0
    with psycopg.connect(database) as conn:
        since = conn.execute("SELECT max(updated_at) - interval '1 day' FROM purchase").fetchone()[0]
        changed, lines = conn.execute("SELECT count(*) FILTER (WHERE updated_at > %s), count(*) FROM purchase",
                                      [since]).fetchone()
        plan = conn.execute("EXPLAIN (FORMAT JSON) SELECT * FROM purchase WHERE updated_at > %s", [since]).fetchone()[0]
    expected = plan[0]["Plan"]["Plan Rows"]
    assert changed < lines / 10  # a day of a 60-day sample (and its late lines)
    assert changed / 3 <= expected <= changed * 3, (expected, changed, lines)
    assert plan[0]["Plan"]["Node Type"] != "Seq Scan"
