"""The web page at ``/``: one HTML file, a script and a stylesheet served by the service itself."""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.response import File
from litestar.static_files import create_static_files_router

WEB_DIR = Path(__file__).resolve().parents[1] / "web"


@get("/", include_in_schema=False)
async def index() -> File:
    return File(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", content_disposition_type="inline")


static = create_static_files_router(path="/static", directories=[WEB_DIR], include_in_schema=False)
