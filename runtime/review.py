"""The review page: a technologist confirms or reclassifies each cell of a sample in a browser.

``wbc-edge review OUT/<sample>`` serves the sample on http://127.0.0.1:8765 (the standard
library's threading HTTP server: one user, a few hundred cells, nothing to install). The page
shows the cells by class with each one's crop and field, is driven from the keyboard, and after
every action shows the differential recomputed by :mod:`wbc_edge.runtime.results` from the
confirmed cells, the same code the archived report uses. Each action is appended to the
sample's ``corrections.jsonl`` before the page hears back, so nothing is lost when the server
or the device restarts.

It binds to the loopback interface unless told otherwise, serves only its own page and the JPEGs
inside the sample folder (a path that leaves it is refused), accepts a change only as a JSON POST
whose Origin, when sent, is the page's own, and answers only to its own host name on loopback
(so another web site open in the same browser can neither read the sample nor change it).
"""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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

    def act(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Apply ``{"cell": id, "action": confirm|reclassify|reset, "class": name}``."""
        with self.lock:
            results = load_results(self.folder)
            cell = results.cell(str(payload.get("cell", "")))
            if cell is None:
                raise ValueError(f"no cell {payload.get('cell')!r} in this sample")
            self.log.append(
                cell.record, str(payload.get("action")), payload.get("class"), self.operator
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


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the console stays for the operator's messages, not one line per thumbnail

    # -- answers ------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json({"error": message}, int(status))

    def _host_ok(self) -> bool:
        """On loopback, only our own host name: a DNS-rebound name is some other site."""
        if self.server.host not in _LOOPBACK:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return host in _LOOPBACK

    # -- routes -------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unknown host")
        path = urlsplit(self.path).path
        if path in _PAGES:
            name, ctype = _PAGES[path]
            return self._send(200, (STATIC / name).read_bytes(), ctype)
        if path == "/api/state":
            return self._json(self.server.review.state())
        if path.startswith("/files/"):
            return self._file(path[len("/files/") :])
        return self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def _file(self, raw: str) -> None:
        root = self.server.review.folder.path.resolve()
        rel = unquote(raw)
        if "\0" in rel or rel.startswith("/"):
            return self._error(HTTPStatus.FORBIDDEN, "outside the sample folder")
        target = (root / rel).resolve()
        if not target.is_relative_to(root):
            return self._error(HTTPStatus.FORBIDDEN, "outside the sample folder")
        inside = target.relative_to(root).parts
        if len(inside) != 2 or inside[0] not in ("cells", "fields") or target.suffix != ".jpg":
            return self._error(HTTPStatus.NOT_FOUND, "only cell and field images are served")
        if not target.is_file():
            return self._error(HTTPStatus.NOT_FOUND, "no such image")
        return self._send(200, target.read_bytes(), "image/jpeg")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unknown host")
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            return self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large")
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            return self._error(HTTPStatus.BAD_REQUEST, "not JSON")
        path = urlsplit(self.path).path
        try:
            if path == "/api/correct":
                return self._json(self.server.review.act(payload))
            if path == "/api/export":
                return self._json(self.server.review.export())
        except ValueError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        return self._error(HTTPStatus.NOT_FOUND, "not found")


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, review: Review, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.review = review
        self.host = host
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"
