"""``/docs`` (Swagger UI) and ``/redoc`` served from the package, and the static assets.

FastAPI's own pages load Swagger UI, ReDoc, a favicon and web fonts from public CDNs: on a
machine without internet access ``/docs`` is a blank page. Here the same pages are built with
FastAPI's ``get_swagger_ui_html`` / ``get_redoc_html`` pointed at copies vendored under
``server/static/`` (pinned releases with their licences; ``scripts/vendor-assets`` fetches
them again; it points the one image ReDoc's bundle loads from its vendor's CDN, a logo, at an
empty inline image), so the docs and the console at ``/ui`` work offline. Swagger UI's
validator badge, which sends the document to a public validator, is off.

Every URL a page holds starts with the request's ``root_path`` (``--root-path``), so the pages
also work behind a proxy that serves the server under a prefix. The assets hold no data: each
file is an open path (no key needed, as for the probes); ``/docs``, ``/redoc`` and the
OpenAPI document keep the key rules of every other route.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from modelport.server.state import AppState

__all__ = ["STATIC_DIR", "STATIC_PREFIX", "asset_versions", "install_docs", "root_of"]

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/ui/static"
"""Where ``STATIC_DIR`` is mounted (the console's and the docs' assets)."""
_DOCS, _REDOC, _OAUTH = "/docs", "/redoc", "/docs/oauth2-redirect"
_FAVICON = f"{STATIC_PREFIX}/console/favicon.svg"


def root_of(request: Request) -> str:
    """The prefix a proxy serves this server under (``--root-path``), without a final ``/``."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def asset_versions() -> dict[str, str]:
    """The vendored releases (``static/versions.json``, written by ``scripts/vendor-assets``)."""
    versions: dict[str, str] = json.loads((STATIC_DIR / "versions.json").read_text("utf-8"))
    return versions


def install_docs(app: FastAPI, state: AppState) -> None:
    """Mount the static assets at :data:`STATIC_PREFIX` (each file an open path) and add
    ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` over the vendored copies."""
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    state.open_paths.update(
        f"{STATIC_PREFIX}/{path.relative_to(STATIC_DIR).as_posix()}"
        for path in STATIC_DIR.rglob("*") if path.is_file())
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = root_of(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_PREFIX}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PREFIX}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=root + _FAVICON, oauth2_redirect_url=root + _OAUTH,
            # no badge that sends the document to the public validator
            swagger_ui_parameters={"validatorUrl": None})

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = root_of(request)
        return get_redoc_html(
            openapi_url=root + openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_PREFIX}/redoc/redoc.standalone.js",
            redoc_favicon_url=root + _FAVICON, with_google_fonts=False)

    app.add_route(_DOCS, swagger_ui, include_in_schema=False)
    app.add_route(_OAUTH, oauth2_redirect, include_in_schema=False)
    app.add_route(_REDOC, redoc, include_in_schema=False)
