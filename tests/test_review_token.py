"""Issue 32, cases 7 and 11: the review page answers malformed requests with 400 (Starlette on
uvicorn, no traceback), and only whoever holds the session's token can read or change it; each
correction records the operator, the time and the client's address; served beyond loopback it
prints this machine's address."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, write_images

from wbc_edge import cli
from wbc_edge.runtime.review import Review, ReviewServer
from wbc_edge.runtime.sample import SampleFolder


@pytest.fixture
def sample(tmp_path) -> SampleFolder:
    model = make_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "slide", [RED, GREEN, BLUE])
    args = ["run", str(tmp_path / "slide"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert cli.run([*args, "--no-live"]) == 0
    return SampleFolder.open(tmp_path / "out" / "slide")


def serving(sample: SampleFolder, host: str = "127.0.0.1") -> ReviewServer:
    srv = ReviewServer(Review(sample, operator="T1"), host=host, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def server(sample):
    srv = serving(sample)
    yield srv
    srv.shutdown()
    srv.server_close()


def call(srv, method, path, body=None, headers=None, address="127.0.0.1"):
    conn = http.client.HTTPConnection(address, srv.server_address[1], timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=data, headers={**hdrs, **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response, payload


def raw(srv, request: bytes) -> bytes:
    """What the server answers to bytes no client library would send."""
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=5) as s:
        s.sendall(request)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_case11_nobody_without_the_token_reads_or_changes_the_review(server, sample):
    cell = sample.records()[0].id
    change = {"cell": cell, "action": "confirm"}
    for headers in ({}, {"Cookie": f"{server.cookie}=wrong"}, {"Authorization": "token nope"}):
        assert call(server, "POST", "/api/correct", change, headers)[0].status == 403
        assert call(server, "GET", "/api/state", headers=headers)[0].status == 403
        assert call(server, "GET", f"/files/cells/{cell}.jpg", headers=headers)[0].status == 403
        assert call(server, "GET", "/", headers=headers)[0].status == 403
    assert not sample.corrections_path.exists()
    # A script that has the token may use it as Jupyter's do.
    token = {"Authorization": f"token {server.token}"}
    assert call(server, "GET", "/api/state", headers=token)[0].status == 200


def test_case11_the_printed_link_becomes_a_cookie_on_the_first_visit(server, sample):
    assert server.url.startswith("http://127.0.0.1:") and f"?token={server.token}" in server.url
    response, _ = call(server, "GET", f"/?token={server.token}")
    assert response.status == 303 and response.getheader("Location") == "/"
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith(f"{server.cookie}={server.token}")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert response.getheader("Referrer-Policy") == "no-referrer"
    jar = {"Cookie": f"{server.cookie}={server.token}"}
    response, page = call(server, "GET", "/", headers=jar)
    assert response.status == 200 and b"<html" in page.lower()
    assert call(server, "GET", "/review.js", headers=jar)[0].status == 200
    assert call(server, "GET", f"/?token={server.token}x")[0].status == 403


def test_case11_every_session_has_its_own_token(sample):
    a, b = ReviewServer(Review(sample), port=0), ReviewServer(Review(sample), port=0)
    try:
        assert a.token != b.token and len(a.token) >= 32 and a.cookie != b.cookie
    finally:
        a.server_close()
        b.server_close()


def test_case11_each_correction_records_operator_time_and_client(server, sample):
    cell = sample.records()[1].id
    jar = {"Cookie": f"{server.cookie}={server.token}"}
    change = {"cell": cell, "action": "reclassify", "class": "Neutrophil"}
    assert call(server, "POST", "/api/correct", change, jar)[0].status == 200
    (entry,) = map(json.loads, sample.corrections_path.read_text().splitlines())
    assert entry["operator"] == "T1" and entry["client"] == "127.0.0.1"
    assert entry["time"][:4].isdigit() and entry["cell"] == cell


def test_case11_beyond_loopback_the_link_names_this_machine(sample):
    srv = serving(sample, host="0.0.0.0")
    try:
        urls = srv.urls()
        assert urls and all("0.0.0.0" not in u and f"?token={srv.token}" in u for u in urls)
        cell = sample.records()[0].id
        change = {"cell": cell, "action": "confirm"}
        # Any Host is answered (colleagues use the machine's name), but never without the token.
        evil = {"Host": "evil.example"}
        assert call(srv, "POST", "/api/correct", change, evil)[0].status == 403
        jar = {"Cookie": f"{srv.cookie}={srv.token}"}
        assert call(srv, "GET", "/api/state", headers=jar)[0].status == 200
        assert not sample.corrections_path.exists()
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_case11_the_command_prints_the_link_with_its_token(sample, capsys, monkeypatch, host):
    seen = []

    def stop_at_once(self):
        seen.append(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(ReviewServer, "serve_forever", stop_at_once)
    assert cli.run(["review", str(sample.path), "--port", "0", "--host", host]) == 0
    said = capsys.readouterr().err
    (srv,) = seen
    assert f"?token={srv.token}" in said and "http://0.0.0.0" not in said
    assert ("token" in said.split("http://")[0]) == (host != "127.0.0.1")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/correct HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: abc\r\n\r\n{}",
        b"POST /api/correct HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: -1\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
    ids=["content-length abc", "content-length -1", "not http"],
)
def test_case07_malformed_requests_get_400_without_a_traceback(server, capfd, request_bytes):
    start = time.monotonic()
    answer = raw(server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400") and time.monotonic() - start < 5
    jar = {"Cookie": f"{server.cookie}={server.token}"}
    assert call(server, "GET", "/api/state", headers=jar)[0].status == 200  # still serving
    assert "Traceback" not in "".join(capfd.readouterr())


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'"text"', b"\xff\xfe", b"{not json"], ids=["array", "string", "utf", "bad"]
)
def test_case07_a_body_that_is_not_a_json_object_is_400(server, sample, capfd, body):
    jar = {"Cookie": f"{server.cookie}={server.token}"}
    response, payload = call(server, "POST", "/api/correct", body, jar)
    assert response.status == 400 and "error" in json.loads(payload)
    cell = sample.records()[0].id
    odd = {"cell": cell, "action": "reclassify", "class": ["Neutrophil"]}
    assert call(server, "POST", "/api/correct", odd, jar)[0].status == 400
    assert not sample.corrections_path.exists()
    assert "Traceback" not in "".join(capfd.readouterr())
