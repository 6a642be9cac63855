"""The product's own pages work with no network: Swagger UI, ReDoc, GraphiQL and the Data Docs, in headless Chromium
that is refused every request not to the local server (or the local file system), and must still render and run."""

import sys
from datetime import UTC, datetime
from urllib.parse import urlparse

import pytest

from product_affinity.contract.odcs import checked_tables
from tests.servers import free_port, serving

pytestmark = pytest.mark.slow  # a browser, and a server

LOCAL = {"127.0.0.1", "localhost"}


SERVE = """import sys
from pathlib import Path

import uvicorn

from product_affinity.delivery.rest import create_app

uvicorn.run(create_app(Path(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The REST and GraphQL app on a free local port, in a process of its own (tests/servers.py says why: in a thread
    of this process, a CI run once saw the stylesheet request fail and Swagger UI drawn unstyled). Nothing is
    published: the docs pages need no data, and /health answers 503."""
    root, port = tmp_path_factory.mktemp("offline"), free_port()
    log = root / "server.log"
    with serving([sys.executable, "-c", SERVE, str(root / "warehouse.duckdb"), str(port)], port, log,
                 ready="/openapi.json") as url:
        yield url
    assert "Traceback" not in log.read_text(), log.read_text()  # every request the pages made was answered


def offline_page(browser):
    """A page whose every request off this machine is aborted, as with no network; returns (page, refused URLs, errors)."""
    opened, refused, errors = browser.new_page(viewport={"width": 1280, "height": 900}), [], []

    def route(request_route):
        url = urlparse(request_route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL:
            refused.append(request_route.request.url)
            request_route.abort("internetdisconnected")
        else:
            request_route.continue_()

    opened.route("**/*", route)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    return opened, refused, errors


def test_swagger_ui_renders_every_operation_with_no_network(browser, server):
    opened, refused, errors = offline_page(browser)
    opened.goto(f"{server}/docs")
    opened.locator(".swagger-ui .opblock").first.wait_for(timeout=30_000)  # drawn by Swagger UI's script from the spec
    assert "Product Affinity" in opened.locator(".swagger-ui .info .title").inner_text()
    assert opened.locator(".swagger-ui .opblock-summary-path", has_text="/load").count() >= 2  # GET and POST
    # styled by swagger-ui.css: a GET operation's method label is filled, not the browser's transparent default
    background = opened.locator(".opblock-get .opblock-summary-method").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")
    assert refused == [] and errors == []
    opened.close()


# ReDoc's bundle draws its "powered by" badge from its maker's site: decoration, the one request it makes off the machine.
REDOC_BADGE = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_redoc_renders_with_no_network(browser, server):
    opened, refused, errors = offline_page(browser)
    opened.goto(f"{server}/redoc")
    opened.locator("h1", has_text="Product Affinity").first.wait_for(timeout=30_000)  # rendered by ReDoc's script
    assert opened.get_by_text("Run a semantic query").first.is_visible()
    assert set(refused) <= {REDOC_BADGE} and errors == []
    opened.close()


def test_graphiql_renders_and_runs_a_query_with_no_network(browser, server):
    """GraphiQL draws its editor, fetches the schema (introspection) and runs a query, all from this server."""
    opened, refused, errors = offline_page(browser)
    opened.goto(f"{server}/graphql")
    opened.locator(".graphiql-container .graphiql-editor").first.wait_for(timeout=30_000)  # drawn by GraphiQL's script
    # styled by graphiql.min.css: the editor area is laid out as a flex container, not a plain block
    assert opened.locator(".graphiql-container").first.evaluate("e => getComputedStyle(e).display") == "flex"
    with opened.expect_response(lambda r: r.url.startswith(f"{server}/graphql") and r.request.method == "POST") as answered:
        opened.locator(".graphiql-execute-button").click()
    assert answered.value.status in (200, 401)  # the example query reaches this API (no key: refused, as it should be)
    assert refused == [] and errors == []
    opened.close()


def test_a_graphiql_page_loading_a_file_with_no_local_copy_is_refused_by_name():
    from product_affinity.delivery.offline import UnknownAsset, offline_graphiql_html

    with pytest.raises(UnknownAsset, match="https://unpkg.com/left-pad@1.0.0/index.js, which has no local copy"):
        offline_graphiql_html('<script src="https://unpkg.com/left-pad@1.0.0/index.js"></script>')


@pytest.fixture(scope="module")
def data_docs(tmp_path_factory):
    """The Data Docs a run writes: the job's source-aligned assets, their checks and the Data Docs step on a small fresh
    sample."""
    import dagster as dg

    from product_affinity.definitions import build_definitions
    from product_affinity.defs.quality import DATA_DOCS_KEY
    from product_affinity.defs.partitions import range_tags
    from product_affinity.defs.source_aligned import source_aligned_assets
    from product_affinity.partitions import all_days
    from product_affinity.sources.sample import generate_sample

    root = tmp_path_factory.mktemp("data_docs")
    generate_sample(root / "sources", customers=200, products=60, orders=1_000, history_days=60,
                    end=datetime.now(UTC).replace(tzinfo=None))
    job = build_definitions(root / "sources", root / "warehouse.duckdb").resolve_job_def("product_affinity")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), asset_selection=[*(a.key for a in source_aligned_assets), DATA_DOCS_KEY],
                                    tags=range_tags(all_days(root / "sources", root / "warehouse.duckdb")))
    assert result.success
    return root / "quality_docs", [a.key.path[-1] for a in source_aligned_assets]


def test_data_docs_index_lists_every_suite_and_validation_styled_with_no_network(browser, data_docs):
    docs, tables = data_docs
    opened, refused, errors = offline_page(browser)
    opened.goto((docs / "index.html").as_uri())
    validations = opened.locator(".ge-index-page-validation-results-table tbody tr")  # drawn by script from the page's data
    validations.first.wait_for(timeout=30_000)
    assert validations.count() == len(tables)  # the tables the run checked, each row linking its suite
    suites = {link.inner_text().strip() for link in opened.locator("a.ge-index-page-table-expectation-suite-link").all()}
    assert suites == set(tables)
    index = (docs / "index.html").read_text()  # and every table's suite, from the contract, in the suites' tab
    assert all(f"expectations/{t.name}.html" in index and (docs / "expectations" / f"{t.name}.html").exists() for t in checked_tables())
    # styled by Bootstrap: its reboot sets the body's font stack, the navbar is laid out as flex
    assert "apple-system" in opened.evaluate("getComputedStyle(document.body).fontFamily")
    assert opened.locator("nav.navbar").first.evaluate("e => getComputedStyle(e).display") == "flex"
    validations.first.click()  # a row opens its validation page
    opened.wait_for_url("**/validations/**")
    assert opened.get_by_text("Overview").first.is_visible()
    assert refused == [] and errors == []
    opened.close()
