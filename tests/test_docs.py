"""The docs say what the code declares, the README's commands and links work, and the manual builds offline.

The README is what a newcomer reads first: its two commands must be make targets, every command of the
CLI must be in its table, and its links must lead to pages that exist. The manual in docs/ is built the
way `make docs` builds it, with --strict (a broken link, a missing anchor or a page left out of the nav
fails the build), and the built site must load nothing from the network.
"""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from product_affinity.governance import policies
from product_affinity.semantic import loader
from product_affinity.consumer_aligned import metrics

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


@pytest.mark.parametrize("marker, module, page", [("metrics", metrics, "metrics/index.md"),
                                                  ("views", loader, "delivery/semantic-model.md"),
                                                  ("groups", policies, "governance/index.md")])
def test_docs_tables_are_generated_from_their_source(marker, module, page):
    shown = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", (DOCS / page).read_text(), re.S).group(1)
    assert shown == module.markdown_table(), f"regenerate with: python -c 'from {module.__name__} import markdown_table; print(markdown_table())'"


def test_every_metric_states_grain_window_and_formula():
    for row in metrics.definitions():
        assert all(row[part] for part in ("grain", "window", "formula")), row["metric"]


def test_the_readme_is_short_and_leads_with_its_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 200, "the README is the first page, not the manual: move detail to docs/"
    first_block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"], ["make", "test"]]


@pytest.mark.parametrize("target", ["run", "test", "docs", "dev", "clean"])
def test_the_make_targets_the_readme_names_exist(target):
    assert f"make {target}" in README.read_text()
    done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_readme_lists_every_command_of_the_cli():
    usage = subprocess.run([sys.executable, "-m", "product_affinity.cli", "--help"], capture_output=True, text=True).stdout
    commands = re.search(r"\{([a-z,-]+)\}", usage).group(1).split(",")
    table = README.read_text().split("## Command line", 1)[1]
    assert [c for c in commands if f"`product-affinity {c}" not in table] == []


def test_the_readme_links_lead_to_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "the README links the manual"
    assert [link for link in local if not (ROOT / link).exists()] == []


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The manual built as `make docs` builds it, strict, into a temporary folder."""
    try:
        import mkdocs  # noqa: F401
        import material  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI is set but mkdocs-material is missing: pip install -e '.[docs]'")
        pytest.skip("needs mkdocs-material (the docs extra: pip install -e '.[docs]'); runs and fails under CI=true")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=os.environ | {"NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.slow
def test_the_manual_builds_strict_with_every_page_in_it(site):
    pages = {p.relative_to(DOCS).with_suffix(".html") for p in DOCS.rglob("*.md")}
    assert pages <= {p.relative_to(site) for p in site.rglob("*.html")}
    assert (site / "search" / "search_index.js").exists(), "the offline plugin inlines the search index for file://"


class RemoteAssets(HTMLParser):
    """The URLs a browser would fetch from the network to render a page: scripts, stylesheets, fonts, images, frames."""

    LOADED = {"script": "src", "img": "src", "iframe": "src", "source": "src", "audio": "src", "video": "src"}
    FETCHING_LINKS = {"stylesheet", "preconnect", "preload", "modulepreload", "icon", "manifest", "dns-prefetch"}

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and set((attrs.get("rel") or "").split()) & self.FETCHING_LINKS:
            url = attrs.get("href")
        else:
            url = attrs.get(self.LOADED.get(tag, ""))
        if url and REMOTE.match(url):
            self.found.append(f"<{tag}> {url}")


REMOTE = re.compile(r"(?:https?:)?//")


@pytest.mark.slow
def test_the_built_manual_loads_nothing_from_the_network(site):
    """No font, script, stylesheet or image from a CDN: the site must work from the file system with no network."""
    offenders = {}
    for path in site.rglob("*.html"):
        parser = RemoteAssets()
        parser.feed(path.read_text(encoding="utf-8"))
        if parser.found:
            offenders[str(path.relative_to(site))] = parser.found[:3]
    for path in site.rglob("*.css"):
        if found := re.findall(r"(?:url\(|@import)\s*[\"']?((?:https?:)?//[^\"')\s]+)", path.read_text(encoding="utf-8")):
            offenders[str(path.relative_to(site))] = found[:3]
    assert offenders == {}


@pytest.mark.slow
def test_the_built_manual_works_from_the_file_system_with_search(site, browser):
    """Opened from file:// with no network: styled, and search answers (its worker runs through the local shim)."""
    page = browser.new_page()
    remote, errors = [], []
    page.on("request", lambda request: None if request.url.startswith(("file:", "data:", "blob:")) else remote.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto((site / "index.html").as_uri())
        assert page.evaluate("getComputedStyle(document.querySelector('.md-header')).position") == "sticky"
        page.fill("input.md-search__input", "quarantine")
        # The worker builds the index first: seconds alone, over 20 s with both cores busy (a CI run under load).
        page.wait_for_selector(".md-search-result__item", timeout=90_000)
        titles = page.locator(".md-search-result__item").all_inner_texts()
    finally:
        page.close()
    assert any("From sources to output ports" in title for title in titles), titles
    assert remote == [] and errors == []
