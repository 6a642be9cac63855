"""The data product page in a real headless browser, and the Dagster UI's asset graph with every asset."""

import os
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from product_affinity.definitions import WRITTEN_ALONGSIDE, defs
from product_affinity.defs.metadata import asset_lineage
from product_affinity.defs.page import page_path
from product_affinity.defs.run_history import configured_like_the_project
from product_affinity.page.render import write_page
from product_affinity.product.descriptor import alignment, owners
from product_affinity.publication import open_published, published_snapshot
from tests.servers import free_port, serving


@pytest.fixture(scope="module")
def page(sample_run, browser):
    """The sample's page, opened from the file system with no server; console errors collected."""
    warehouse, _, _ = sample_run
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    opened.goto(page_path(warehouse).as_uri())
    yield opened, errors, warehouse
    opened.close()


def test_page_renders_offline_without_console_errors(page, tmp_path):
    opened, errors, _ = page
    assert opened.title().startswith("Product Affinity")
    assert opened.locator("svg").count() >= 4  # KPI tree, trend, backtest, heatmap
    for section in ("alignment", "kpi-tree", "backtest", "affinity", "rules", "ports", "metrics", "slos"):
        assert opened.locator(f"#{section}").is_visible(), section
    opened.screenshot(path=tmp_path / "page.png", full_page=True)
    assert errors == []


def test_page_shows_the_published_numbers(page):
    opened, _, warehouse = page
    with open_published(warehouse) as conn:
        # The North Star of the last complete month, recounted here from the purchase lines by timestamp.
        (month, expected), = conn.execute(
            """WITH firsts AS (SELECT p.customer_id, pr.category, min(p.purchased_at) AS first_at
                               FROM source_aligned.purchase AS p JOIN source_aligned.product AS pr USING (product_id) GROUP BY ALL),
                    customers AS (SELECT customer_id, min(purchased_at) AS first_at FROM source_aligned.purchase GROUP BY ALL),
                    month AS (SELECT date_trunc('month', max(purchased_at)) - INTERVAL 1 MONTH AS m FROM source_aligned.purchase)
               SELECT strftime(any_value(m), '%Y-%m'), count(DISTINCT f.customer_id) FROM firsts AS f JOIN customers AS c USING (customer_id), month
               WHERE f.first_at >= m AND f.first_at < m + INTERVAL 1 MONTH AND c.first_at < m""").fetchall()
        backtest = conn.execute("SELECT level, recommender, k, hit_rate, precision_at_k FROM consumer_aligned.recommendation_backtest").fetchall()
        rows = {t: conn.execute(f"SELECT count(*) FROM consumer_aligned.{t}").fetchall()[0][0] for t in ("customer_metrics", "kpi_tree")}
    assert opened.locator("#north-star-value").inner_text() == f"{expected:,}"
    assert month in opened.locator("#kpi-tree h2").inner_text()
    node = opened.locator(f"#kpi-table tr[data-node='{alignment()['northStar']['id']}'] td.value")  # folded: text, not rendered
    assert node.text_content() == f"{expected:,}"
    for level, recommender, k, hit_rate, precision in backtest:
        row = opened.locator(f"#backtest-table tr[data-level='{level}'][data-recommender='{recommender}'][data-k='{k}']")
        assert (row.locator(".hit-rate").text_content(), row.locator(".precision").text_content()) == (f"{hit_rate:.1%}", f"{precision:.1%}")
    for port, count in rows.items():
        assert opened.locator(f"tr[data-port='{port}'] td.num").inner_text() == f"{count:,}"
    assert opened.locator("#owner").inner_text() == ", ".join(owners())
    assert "0 failed" in opened.locator(".card").nth(3).inner_text()


@pytest.mark.slow
def test_dagster_asset_graph_shows_every_asset(browser, tmp_path):
    """`dagster dev`'s webserver on a free port with a throw-away instance configured as the project's (its instance
    class included): the asset graph lists every asset of the definitions."""
    home, port = configured_like_the_project(tmp_path / "dagster_home"), free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    argv = [str(webserver), "-m", "product_affinity.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with serving(argv, port, tmp_path / "webserver.log", ready="/server_info", env={**os.environ, "DAGSTER_HOME": str(home)},
                 start_s=180) as url:
        # The graph draws only the nodes inside the viewport: a large one holds each group with its neighbours (the
        # consumer_aligned group's, with the snapshot, the SLO results and the Data Docs downstream of every table,
        # runs below 1,800 px).
        opened = browser.new_page(viewport={"width": 2400, "height": 2600})
        opened.goto(f"{url}/asset-groups", wait_until="networkidle")
        graph = defs.resolve_asset_graph()
        written_alongside = [spec.key for spec in WRITTEN_ALONGSIDE]
        groups: dict[str, list] = {}
        for key in graph.get_all_asset_keys():
            groups.setdefault(graph.get(key).group_name, []).append(key)
        for group in groups:  # the global graph lists every group; each group's graph shows its assets by name
            opened.get_by_text(group, exact=True).first.wait_for(timeout=60_000)
        for group, keys in groups.items():
            opened.goto(f"{url}/locations/product_affinity.definitions/asset-groups/{group}", wait_until="networkidle")
            for key in keys:
                if key not in written_alongside:  # a group's graph leaves out these external assets: they have their own page
                    opened.get_by_text(key.path[-1], exact=True).first.wait_for(timeout=60_000)
            if opened.get_by_role("button", name="Skip").count():  # the first-visit community dialog hides the graph
                opened.get_by_role("button", name="Skip").click()
            opened.screenshot(path=tmp_path / f"asset-graph-{group}.png")
        for key in written_alongside:
            # the tables written alongside (quarantine, slo_results): an asset page with their columns and what writes them
            opened.goto(f"{url}/assets/{'/'.join(key.path)}", wait_until="networkidle")
            opened.get_by_text("External Asset", exact=True).first.wait_for(timeout=60_000)
            for column in graph.get(key).metadata["dagster/column_schema"].columns:
                opened.get_by_text(column.name, exact=True).first.wait_for(timeout=60_000)
            for parent in graph.get(key).parent_keys:
                opened.get_by_text(" / ".join(parent.path), exact=True).first.wait_for(timeout=60_000)
        opened.close()


# What a marketer acts on comes first; the long tables fold away. The page was 12,764 px tall, most of it SLO rows.
PAGE_HEIGHT_BOUND = 6_000
LEADING = ["opportunities", "kpi-tree", "backtest"]


def test_the_page_leads_with_what_a_marketer_acts_on_and_stays_short(page):
    opened, _, _ = page
    order = opened.locator("main > section").evaluate_all("sections => sections.map(s => s.id)")
    assert order[:3] == LEADING
    assert order.index("slos") < order.index("alignment") < order.index("ports") and order[-1] == "links"
    height = opened.evaluate("document.documentElement.scrollHeight")
    assert height < PAGE_HEIGHT_BOUND, height
    assert opened.locator("#slo-details").get_attribute("open") is None  # the full SLO table is folded


def test_top_opportunities_are_the_published_first_recommendations(page):
    opened, _, warehouse = page
    with open_published(warehouse) as conn:
        expected = conn.execute(
            """SELECT recommended_name, count(*) FROM consumer_aligned.cross_sell_recommendations
               WHERE level = 'category' AND rank = 1 GROUP BY ALL ORDER BY sum(expected_value) DESC, count(*) DESC, 1 LIMIT 8"""
        ).fetchall()
    shown = opened.locator("#opportunities-table tr[data-item]")
    assert expected and shown.count() == len(expected)
    for i, (item, customers) in enumerate(expected):
        assert shown.nth(i).get_attribute("data-item") == item
        assert shown.nth(i).locator("td").nth(1).inner_text() == f"{customers:,}"


def test_the_page_links_the_data_docs_the_api_docs_and_the_dagster_ui(page):
    opened, _, warehouse = page
    docs = opened.locator("#link-data-docs").get_attribute("href")
    assert (page_path(warehouse).parent / docs).resolve() == (warehouse.parent / "quality_docs" / "index.html").resolve()
    assert (page_path(warehouse).parent / docs).is_file()
    assert opened.locator("#link-api-docs").get_attribute("href").endswith("/docs")
    assert opened.locator("#link-graphiql").get_attribute("href").endswith("/graphql")
    assert opened.locator("#link-dagster").get_attribute("href").startswith("http")


def test_failed_slos_come_first_outside_the_fold(sample_run, browser, tmp_path):
    """One rule of the latest run made to fail in a copy of the snapshot: it is listed above the fold and heads the full table."""
    warehouse, _, _ = sample_run
    snapshot = tmp_path / "snapshot.duckdb"
    shutil.copyfile(published_snapshot(warehouse), snapshot)
    snapshot.chmod(0o644)
    with duckdb.connect(str(snapshot)) as conn:
        conn.execute("""UPDATE quality.slo_results SET passed = false WHERE rule_id = 'validity_email'
                        AND run_id = (SELECT run_id FROM quality.slo_results GROUP BY run_id ORDER BY max(checked_at) DESC LIMIT 1)""")
    written = write_page(snapshot, warehouse, asset_lineage(defs.resolve_asset_graph()), tmp_path / "page", warehouse.parent / "quality_docs")
    opened = browser.new_page()
    opened.goto(written.as_uri())
    failures = opened.locator("#slo-failures tr:has(td)")
    assert failures.count() == 1 and "validity_email" in failures.first.inner_text()
    first = opened.locator("#slo-table tr:has(td)").first  # folded: its text, not what is drawn
    assert "validity_email" in first.text_content() and first.locator("td.fail").count() == 1
    assert "1 failed" in opened.locator("#slo-line").inner_text()
    opened.close()
