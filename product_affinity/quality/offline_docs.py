"""Great Expectations' Data Docs with no network: the CDN tags of the pages it writes, pointed at local files.

GE's pages load Bootstrap, jQuery, bootstrap-table, Font Awesome, a datepicker and Vega from CDNs; offline the index
showed no suites or validations (bootstrap-table draws that table) and no page was styled. After each build, every
page's CDN tags are replaced by tags for the files in `static/datadocs/` (see its LICENSES.md), copied into the Data
Docs folder so the site stays a folder that opens from the file system:

- Bootstrap 4 and jQuery: the libraries themselves (Bootstrap 4.6.1 where GE asks for 4.3.1: same major version);
- bootstrap-table: `table.js`, which draws the tables from the data GE puts in the page, without sorting or filters;
- Font Awesome: `offline.css`, the few icons GE uses as plain characters;
- the datepicker, the dark theme and the filter controls: dropped (they serve the filters);
- Vega: a stand-in that says the chart needs the network (no expectation in this product's suites draws one);
- GE's logos, which it loads from its own web server: the copies GE puts in the folder's `static/images`.

A tag this module does not know is left as it is, so the page still works online and the offline test names it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

FILES = Path(__file__).parent / "static" / "datadocs"
LOCAL = "static/offline"  # inside the Data Docs folder
VEGA_STAND_IN = ("<script>window.vegaEmbed = function (el) { var target = typeof el === 'string' ? document.querySelector(el) : el;"
                 " if (target) target.textContent = 'This chart needs the network (Vega is not available offline).';"
                 " return Promise.resolve(); };</script>")
_GE_ASSET = re.compile(r"https://great-expectations-web-assets\.s3\.[\w.-]+\.amazonaws\.com/([\w.-]+)(?:\?[^\"')\s]*)?")
_TAG = re.compile(r'<(script|link)\b[^>]*?(?:src|href)="(https://[^"]+)"[^>]*>(?:\s*</script>)?', re.S)


def _replacement(url: str, prefix: str) -> str | None:
    """The tag to put instead of the one loading `url` ("" drops it), or None for a URL not known here."""
    script = lambda name: f'<script src="{prefix}{name}"></script>'  # noqa: E731
    style = lambda name: f'<link rel="stylesheet" href="{prefix}{name}" />'  # noqa: E731
    if url.endswith("/bootstrap.min.css"):
        return style("bootstrap.min.css")
    if url.endswith("/bootstrap.min.js"):
        return script("bootstrap.bundle.min.js")  # with Popper
    if "jquery" in url and url.endswith(".min.js"):
        return script("jquery.min.js")
    if url.endswith("/bootstrap-table.min.js"):
        return script("table.js")
    if "font-awesome" in url:
        return style("offline.css")
    if "vega-embed" in url:
        return VEGA_STAND_IN
    if ("popper" in url or "bootstrap-table" in url or "bootstrap-datepicker" in url or "bootstrap-dark" in url
            or re.search(r"/npm/vega(-lite)?@", url)):
        return ""
    return None


def make_offline(docs: Path) -> list[Path]:
    """Rewrite every page of the Data Docs in `docs` that still loads from a CDN; return the pages rewritten."""
    target = docs / LOCAL
    target.mkdir(parents=True, exist_ok=True)
    for name in ("bootstrap.min.css", "bootstrap.bundle.min.js", "jquery.min.js", "table.js", "offline.css"):
        if not (target / name).exists():
            shutil.copyfile(FILES / name, target / name)
    rewritten = []
    for page in docs.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        if "https://" not in html:
            continue
        to_docs = "../" * (len(page.relative_to(docs).parts) - 1)
        prefix = to_docs + LOCAL + "/"

        def local(tag: re.Match) -> str:
            replacement = _replacement(tag.group(2), prefix)
            return tag.group(0) if replacement is None else replacement

        def logo(url: re.Match) -> str:
            name = url.group(1) if (docs / "static" / "images" / url.group(1)).exists() else "logo-long.png"
            return f"{to_docs}static/images/{name}"

        offline = _GE_ASSET.sub(logo, _TAG.sub(local, html))
        if offline != html:
            page.write_text(offline, encoding="utf-8")
            rewritten.append(page)
    return rewritten
