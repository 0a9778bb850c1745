"""The review page: a technologist confirms or reclassifies each cell of a sample in a browser.

``wbc-edge review OUT/<sample>`` serves the sample with Starlette on uvicorn (malformed requests
are answered 400 by the server, never a traceback) at http://127.0.0.1:8765/?token=... . The
page shows the cells by class with each one's crop and field, is driven from the keyboard, and
after every action shows the differential recomputed by :mod:`wbc_edge.runtime.results` from
the confirmed cells, the same code the archived report uses. Each action is appended to the
sample's ``corrections.jsonl`` (with the operator, the time and the client's address) before
the page hears back, so nothing is lost when the server or the device restarts.

Who may change the review: whoever holds the session's secret token, as Jupyter does it. The
token is in the URL the command prints; the first visit trades it for a cookie (HttpOnly,
SameSite=Strict) and every request needs one or the other, so another local process, or a
colleague's PC on the lab network, gets 403 without the link. The page binds to loopback unless
``--host`` says otherwise (a technologist at a desktop PC: ``--host 0.0.0.0`` prints the
machine's address). It serves only its own page and the JPEGs inside the sample folder (a path
that leaves it is refused), accepts a change only as a JSON POST whose Origin, when sent, is the
page's own, and on loopback answers only to its own host names (a DNS-rebound name is refused).
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wbc_edge.runtime.corrections import CorrectionLog, export_labelled
from wbc_edge.runtime.differential import EXCLUDED
from wbc_edge.runtime.options import REVIEW_HOST, REVIEW_PORT
from wbc_edge.runtime.results import SampleResults, load_results, summary_dict
from wbc_edge.runtime.sample import SampleFolder

DEFAULT_HOST, DEFAULT_PORT = REVIEW_HOST, REVIEW_PORT
STATIC = Path(__file__).with_name("static")
_PAGES = {
    "/": ("review.html", "text/html; charset=utf-8"),
    "/review.js": ("review.js", "text/javascript; charset=utf-8"),
    "/review.css": ("review.css", "text/css; charset=utf-8"),
}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_CSP = "default-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'"


class Review:
    """The state behind the page: reads the folder, applies actions, one at a time."""

    def __init__(self, folder: SampleFolder, operator: str = "") -> None:
        self.folder = folder
        self.operator = operator
        self.lock = threading.Lock()
        results = load_results(folder)
        self.log = CorrectionLog(folder, results.card.class_names)

    def state(self) -> dict[str, Any]:
        return _state(load_results(self.folder), self.operator)

    def act(self, payload: dict[str, Any], client: str = "") -> dict[str, Any]:
        """Apply ``{"cell": id, "action": confirm|reclassify|reset, "class": name}``, recorded
        with the operator, the time and ``client`` (the address the request came from)."""
        with self.lock:
            results = load_results(self.folder)
            cell = results.cell(str(payload.get("cell", "")))
            if cell is None:
                raise ValueError(f"no cell {payload.get('cell')!r} in this sample")
            label = payload.get("class")
            if label is not None and not isinstance(label, str):
                raise ValueError(f"class must be a class name, not {label!r}")
            self.log.append(
                cell.record, str(payload.get("action")), label, self.operator, client=client
            )
            return _state(load_results(self.folder), self.operator)

    def export(self) -> dict[str, Any]:
        with self.lock:
            dest, counts = export_labelled(self.folder)
        return {"folder": str(dest), "counts": counts}


def _state(results: SampleResults, operator: str) -> dict[str, Any]:
    card, folder = results.card, results.folder
    fields = {}
    for cell in results.cells:
        fid = cell.record.field_id
        if fid not in fields:
            meta = folder.field_meta(fid) if folder.field_path(fid).is_file() else None
            fields[fid] = (
                None if meta is None else {"width": meta.get("width"), "height": meta.get("height")}
            )
    cells = [
        {
            "id": c.id,
            "label": c.label,
            "predicted": c.predicted,
            "prob": round(c.record.prob, 4),
            "top3": c.record.top3,
            "uncertain": c.record.uncertain,
            "ood": c.record.ood,
            "confirmed": c.confirmed,
            "needs_review": c.needs_review,
            "file": Path(c.record.file).name if c.record.file else "",
            "frame": c.record.frame,
            "index": c.record.cell,
            "box": list(c.record.box),
            "field": c.record.field_id if fields.get(c.record.field_id) else None,
        }
        for c in results.cells
    ]
    return {
        "sample": folder.sample,
        "operator": operator,
        "classes": [{"name": c, "role": card.roles[c]} for c in card.class_names],
        "excluded": EXCLUDED,
        "cells": cells,
        "fields": {k: v for k, v in fields.items() if v},
        **summary_dict(results),
    }


def _host_name(header: str) -> str:
    """The host of a Host header, without its port: ``[::1]:8765`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def machine_addresses() -> list[str]:
    """This machine's address on the network (the interface a default route leaves by; no
    packet is sent), and its host name: what a colleague's browser can open."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, suppress(OSError):
        probe.connect(("10.255.255.255", 1))
        found.append(probe.getsockname()[0])
    with suppress(OSError):
        found.append(socket.gethostbyname(socket.gethostname()))
    found.append(socket.gethostname())
    return list(dict.fromkeys(a for a in found if a and not a.startswith("127.")))


class ReviewServer:
    """The page for one ``Review``, served by uvicorn from a socket bound here (so ``port=0``
    has its real port before serving); ``serve_forever`` blocks until ``shutdown``."""

    def __init__(
        self,
        review: Review,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
    ) -> None:
        self.review = review
        self.host = host
        self.token = token or secrets.token_urlsafe(24)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(128)  # a request before uvicorn starts waits, not refused
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        # Cookies are not kept apart by port: one per port, so two reviews do not collide.
        self.cookie = f"wbc_review_{self.server_address[1]}"
        self._server: Any = None
        self._lock = threading.Lock()
        self._exit = threading.Event()
        self._stopped = threading.Event()

    @property
    def loopback(self) -> bool:
        return self.host in _LOOPBACK

    @property
    def url(self) -> str:
        """The link to open: the bound address (loopback) or this machine's address."""
        return self.urls()[0]

    def urls(self) -> list[str]:
        port = self.server_address[1]
        hosts = [self.server_address[0]]
        if self.host in ("0.0.0.0", "::", ""):
            hosts = machine_addresses() or hosts
        shown = [f"[{h}]" if ":" in str(h) else str(h) for h in hosts]
        return [f"http://{h}:{port}/?token={self.token}" for h in shown]

    def app(self) -> Any:
        return _app(self)

    def serve_forever(self) -> None:
        import uvicorn

        config = uvicorn.Config(
            self.app(),
            http="h11",
            lifespan="off",
            log_config=None,
            log_level="critical",  # a malformed request is answered 400, not logged at length
            access_log=False,
            server_header=False,
            date_header=False,
        )
        with self._lock:
            if self._exit.is_set():  # shut down before it started
                return
            self._server = server = uvicorn.Server(config)
        try:
            server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop ``serve_forever`` (from another thread) and wait for it to return."""
        with self._lock:
            self._exit.set()
            server = self._server
        if server is not None:
            server.should_exit = True
            self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def _app(server: ReviewServer) -> Any:
    """The Starlette application: every route behind the same checks, in this order: the host
    (DNS rebinding, on loopback), the token or its cookie, and for a change the Origin, the
    content type and a JSON object as the body."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    from wbc_edge.errors import UserError

    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _CSP,
        "Referrer-Policy": "no-referrer",  # the token never leaves in a Referer
    }

    def error(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status, headers=headers)

    def refused(request: Request) -> Response | None:
        if server.loopback and _host_name(request.headers.get("host", "")) not in _LOOPBACK:
            return error(403, "unknown host")
        given = request.cookies.get(server.cookie) or request.query_params.get("token") or ""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("token", "bearer"):
            given = value.strip()
        if not hmac.compare_digest(given.encode(), server.token.encode()):
            return error(
                403,
                "this review needs its token: open the link `wbc-edge review` printed "
                "(http://...?token=...)",
            )
        return None

    def guarded(endpoint: Any) -> Any:
        async def answer(request: Request) -> Response:
            problem = refused(request)
            if problem is not None:
                return problem
            try:
                return await endpoint(request)
            except ValueError as exc:  # a bad action: the request's fault
                return error(400, str(exc))
            except (UserError, OSError) as exc:  # the folder's (a bad line, a full disk)
                from wbc_edge.console import console

                console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
                return error(500, str(exc))

        return answer

    async def page(request: Request) -> Response:
        if "token" in request.query_params:  # the first visit: the token becomes a cookie
            response = RedirectResponse("/", 303, headers=headers)
            response.set_cookie(
                server.cookie, server.token, httponly=True, samesite="strict", path="/"
            )
            return response
        name, ctype = _PAGES[request.url.path]
        return Response((STATIC / name).read_bytes(), media_type=ctype, headers=headers)

    async def static(request: Request) -> Response:
        name, ctype = _PAGES[request.url.path]
        return Response((STATIC / name).read_bytes(), media_type=ctype, headers=headers)

    async def state(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(server.review.state), headers=headers)

    async def image(request: Request) -> Response:
        root = server.review.folder.path.resolve()
        rel = request.path_params["rel"]
        if "\0" in rel or rel.startswith("/"):
            return error(403, "outside the sample folder")
        target = (root / rel).resolve()
        if not target.is_relative_to(root):
            return error(403, "outside the sample folder")
        inside = target.relative_to(root).parts
        if len(inside) != 2 or inside[0] not in ("cells", "fields") or target.suffix != ".jpg":
            return error(404, "only cell and field images are served")
        if not target.is_file():
            return error(404, "no such image")
        return Response(target.read_bytes(), media_type="image/jpeg", headers=headers)

    async def payload(request: Request) -> dict[str, Any] | Response:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            return error(403, "cross-origin request refused")
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/json":
            return error(415, "send application/json")
        if int(request.headers.get("content-length") or 0) > 65536:
            return error(413, "too large")
        body = await request.body()
        if len(body) > 65536:
            return error(413, "too large")
        try:
            value = json.loads(body or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return error(400, "not JSON")
        if not isinstance(value, dict):
            return error(400, f"send a JSON object, not a JSON {type(value).__name__}")
        return value

    async def correct(request: Request) -> Response:
        body = await payload(request)
        if isinstance(body, Response):
            return body
        client = request.client.host if request.client else ""
        result = await run_in_threadpool(server.review.act, body, client)
        return JSONResponse(result, headers=headers)

    async def export(request: Request) -> Response:
        body = await payload(request)
        if isinstance(body, Response):
            return body
        return JSONResponse(await run_in_threadpool(server.review.export), headers=headers)

    async def not_found(request: Request) -> Response:
        return error(404, "not found")

    everything = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    routes = [
        Route("/", guarded(page), methods=["GET"]),
        Route("/review.js", guarded(static), methods=["GET"]),
        Route("/review.css", guarded(static), methods=["GET"]),
        Route("/api/state", guarded(state), methods=["GET"]),
        Route("/files/{rel:path}", guarded(image), methods=["GET"]),
        Route("/api/correct", guarded(correct), methods=["POST"]),
        Route("/api/export", guarded(export), methods=["POST"]),
        Route("/{rest:path}", guarded(not_found), methods=everything),
    ]
    return Starlette(routes=routes)
