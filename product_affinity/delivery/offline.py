"""GraphiQL with no network: strawberry's GraphiQL page, its scripts and styles served by this app instead of unpkg.

The files are vendored in `static/graphiql/` (see its LICENSES.md). Strawberry's page is kept as it is (its
query editor, URL sharing, explorer plugin); only the tags that load from the CDN are pointed at the local copies,
without the CDN's integrity hashes (they are the CDN files' hashes), and js-cookie, used only to read a CSRF cookie
this app never sets, is replaced by a one-line reader.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.staticfiles import StaticFiles
from strawberry.fastapi import GraphQLRouter
from strawberry.http.ides import get_graphql_ide_html

GRAPHIQL_FILES = Path(__file__).parent / "static" / "graphiql"
GRAPHIQL_URL = "/static/graphiql"
LOCAL = {  # what strawberry's page loads from unpkg -> the vendored file
    "react.production.min.js": "react.production.min.js",
    "react-dom.production.min.js": "react-dom.production.min.js",
    "graphiql.min.css": "graphiql.min.css",
    "dist/style.css": "graphiql-plugin-explorer-style.css",
    "graphiql.min.js": "graphiql.min.js",
    "dist/index.umd.js": "graphiql-plugin-explorer.umd.js",
}
COOKIES = ("<script>window.Cookies = {get: name => (document.cookie.split('; ').find(c => c.startsWith(name + '=')) || '')"
           ".split('=')[1]};</script>")
_CDN_TAG = re.compile(r'<(script|link)\b[^>]*?(?:src|href)="https://unpkg\.com/([^"]+)"[^>]*>(?:\s*</script>)?', re.S)


class UnknownAsset(RuntimeError):
    """Strawberry's GraphiQL page loads a file this module has no local copy of (a strawberry upgrade changed it)."""


def offline_graphiql_html(html: str, prefix: str = GRAPHIQL_URL) -> str:
    """Strawberry's GraphiQL page with every unpkg tag replaced by one for the local copy."""

    def local(tag: re.Match) -> str:
        kind, path = tag.group(1), tag.group(2)
        if path.startswith("js-cookie@"):
            return COOKIES
        name = next((local for suffix, local in LOCAL.items() if path.endswith(suffix)), None)
        if name is None:
            raise UnknownAsset(f"strawberry's GraphiQL page loads https://unpkg.com/{path}, which has no local copy in {GRAPHIQL_FILES}")
        return f'<script src="{prefix}/{name}"></script>' if kind == "script" else f'<link rel="stylesheet" href="{prefix}/{name}" />'

    return _CDN_TAG.sub(local, html)


class OfflineGraphQLRouter(GraphQLRouter):
    """strawberry's GraphQLRouter whose GraphiQL page loads nothing from the internet."""

    @property
    def graphql_ide_html(self) -> str:
        return offline_graphiql_html(get_graphql_ide_html(graphql_ide=self.graphql_ide))


def graphiql_files() -> StaticFiles:
    """The vendored GraphiQL files, for the app to mount at GRAPHIQL_URL."""
    return StaticFiles(directory=GRAPHIQL_FILES)
