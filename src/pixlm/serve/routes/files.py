"""Files: the PNGs of ``url`` responses (by random id, until they expire) and the web UI's page."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from pixlm.serve.errors import shown
from pixlm.serve.images import not_found

UI_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
router = APIRouter()


def static_dir() -> Path:
    """Folder of the web UI's files (mounted at ``/static``)."""
    return Path(str(resources.files("pixlm.serve") / "static"))


@router.get("/v1/images/files/{name}")
async def image_file(request: Request, name: str) -> FileResponse:
    """A PNG from a ``response_format=url`` response, until it expires."""
    store = request.app.state.store
    path = store.path(name)
    if path is None:
        raise not_found(f"image {shown(name)} does not exist or has expired (images are kept {store.ttl_s:g} s)")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600",
                                                               "X-Content-Type-Options": "nosniff"})


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(static_dir() / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": UI_CSP, "X-Content-Type-Options": "nosniff"})
