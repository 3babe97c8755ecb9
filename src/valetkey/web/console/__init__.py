"""The web console at `/console`: server-rendered pages (Jinja2) for the people around an
agent — approvers, the users it acts for, admins. Every page works without JavaScript;
`static/console.js` only makes the inbox live and the clocks tick. The pages call the same
services as the CLI and the API and hold no rules of their own."""

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from valetkey.web.console import agents, approvals, audit, auth, people, policies, sso
from valetkey.web.console.base import SignInNeeded, plain_request, redirect, render

_STATIC = Path(__file__).parent / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_FILES = {p.name: p.read_bytes() for p in _STATIC.iterdir() if p.suffix in _TYPES}

static = APIRouter(prefix="/console/static", include_in_schema=False)


@static.get("/{name}")
async def static_file(name: str) -> Response:
    """The console's own CSS and JS, from the package: nothing from a CDN."""
    body = _FILES.get(name)
    if body is None:
        raise HTTPException(404, "no such file")
    return Response(body, media_type=_TYPES[Path(name).suffix], headers={
        "Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff",
    })  # fmt: skip


def install(app: FastAPI) -> None:
    for module in (auth, sso, approvals, people, agents, audit, policies):
        app.include_router(module.router, dependencies=[Depends(plain_request)])
    app.include_router(static)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        if request.method != "GET":
            return redirect("/console/login")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(f"/console/login?next={quote(target, safe='')}")


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    """A console page's error, as a page (the API answers problem+json instead)."""
    return render(request, None, "error.html", status, title=title, detail=detail)
