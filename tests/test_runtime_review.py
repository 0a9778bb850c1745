"""The review page: served on localhost, confirm / reclassify saved append-only and surviving a
restart, the differential recomputed from confirmed cells, paths outside the sample refused,
a labelled crop export; and driven by headless Chromium from the keyboard."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, write_images

from wbc_edge import cli
from wbc_edge.data.scan import scan_class_folders
from wbc_edge.runtime.corrections import read_corrections, reviewed_cells
from wbc_edge.runtime.differential import EXCLUDED
from wbc_edge.runtime.results import load_results
from wbc_edge.runtime.review import DEFAULT_HOST, Review, ReviewServer
from wbc_edge.runtime.sample import SampleFolder

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("WBC_EDGE_CHROMIUM") or shutil.which("chromium")
GREY = (128, 128, 128)


@pytest.fixture
def sample(tmp_path) -> SampleFolder:
    """A phantom run: 3 red (Neutrophil), 2 green (Lymphocyte), 2 blue (Promyelocyte) and 2
    grey cells the model is unsure of (under review)."""
    model = make_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "slide", [RED, GREEN, BLUE, GREY, RED, GREEN, BLUE, GREY, RED])
    args = ["run", str(tmp_path / "slide"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert cli.run([*args, "--no-live", "--min-confidence", "0.6"]) == 0
    return SampleFolder.open(tmp_path / "out" / "slide")


@pytest.fixture
def server(sample):
    srv = ReviewServer(Review(sample, operator="T1"), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def session(srv) -> dict[str, str]:
    """The cookie a browser has after opening the printed link (issue 32: the token)."""
    return {"Cookie": f"{srv.cookie}={srv.token}"}


def request(srv, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=data, headers={**session(srv), **hdrs, **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, payload


def test_it_binds_to_localhost_unless_told_otherwise(server):
    assert DEFAULT_HOST == "127.0.0.1" and server.server_address[0] == "127.0.0.1"
    from typer.main import get_command

    from wbc_edge.cli import app

    review = get_command(app).commands["review"]
    host = next(p for p in review.params if p.name == "host")
    assert host.default == "127.0.0.1"


def test_requests_outside_the_sample_folder_are_refused(server, sample, tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    cell = sample.records()[0].id
    assert request(server, "GET", f"/files/cells/{cell}.jpg")[0] == 200
    for path in (
        "/files/../../secret.jpg",
        "/files/cells/../../../secret.jpg",
        "/files/cells/%2e%2e/%2e%2e/%2e%2e/secret.jpg",
        "/files/%2Fetc%2Fpasswd",
        f"/files/{tmp_path}/secret.jpg",
    ):
        status, body = request(server, "GET", path)
        assert status in (403, 404) and b"secret" not in body, path
    assert request(server, "GET", "/files/run.json")[0] == 404  # only cell and field images
    assert request(server, "GET", "/files/cells/../../../secret.jpg")[0] == 403


def test_other_sites_can_neither_change_nor_read_the_review(server, sample):
    cell = sample.records()[0].id
    change = {"cell": cell, "action": "confirm"}
    evil = {"Origin": "http://evil.example"}
    assert request(server, "POST", "/api/correct", change, evil)[0] == 403
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("POST", "/api/correct", body=json.dumps(change), headers=session(server))
    assert conn.getresponse().status == 415
    conn.close()
    assert request(server, "GET", "/api/state", headers={"Host": "evil.example:80"})[0] == 403
    assert not sample.corrections_path.exists()


def test_corrections_are_appended_survive_a_restart_and_recompute_the_counts(server, sample):
    records = sample.records()
    grey = [r for r in records if r.uncertain]
    red = [r for r in records if r.label == "Neutrophil"]
    status, body = request(server, "POST", "/api/correct", {"cell": red[0].id, "action": "confirm"})
    assert status == 200
    state = json.loads(body)
    assert state["verified"]["wbc_counted"] == 1 and state["verified"]["not_confirmed"] == 8
    moves = [
        {"cell": grey[0].id, "action": "reclassify", "class": "Lymphocyte"},
        {"cell": grey[1].id, "action": "reclassify", "class": EXCLUDED},
        {"cell": red[1].id, "action": "reclassify", "class": "Promyelocyte"},
        {"cell": red[1].id, "action": "reclassify", "class": "Lymphocyte"},  # changed mind
    ]
    for move in moves:
        status, body = request(server, "POST", "/api/correct", move)
        assert status == 200, body
    state = json.loads(body)
    verified = state["verified"]
    assert {c: v["count"] for c, v in verified["wbc"].items()} == {
        "Neutrophil": 1,
        "Lymphocyte": 2,
        "Promyelocyte": 0,
    }
    assert verified["excluded"] == 1 and verified["wbc"]["Lymphocyte"]["percent"] == 66.67
    # Pre-classified: the grey cells are no longer under review once confirmed.
    assert state["differential"]["in_review"] == 0
    bad = {"cell": red[2].id, "action": "reclassify", "class": "<script>"}
    assert request(server, "POST", "/api/correct", bad)[0] == 400
    assert request(server, "POST", "/api/correct", {"cell": "nope", "action": "confirm"})[0] == 400

    lines = sample.corrections_path.read_text().splitlines()
    assert len(lines) == 5  # append-only: the change of mind is a new line
    assert [json.loads(x)["operator"] for x in lines] == ["T1"] * 5
    # A new server (a restart) sees the same review.
    again = Review(SampleFolder.open(sample.path)).state()
    assert again["verified"] == verified
    assert read_corrections(sample.corrections_path)[red[1].id]["class"] == "Lymphocyte"


def test_confirmed_cells_export_as_class_folders_adapt_can_read(server, sample, tmp_path):
    records = sample.records()
    for r in records[:4]:
        request(server, "POST", "/api/correct", {"cell": r.id, "action": "confirm"})
    grey = next(r for r in records if r.uncertain and r not in records[:4])
    request(
        server,
        "POST",
        "/api/correct",
        {"cell": grey.id, "action": "reclassify", "class": "Lymphocyte"},
    )
    status, body = request(server, "POST", "/api/export", {})
    assert status == 200
    files = scan_class_folders(Path(json.loads(body)["folder"]))
    confirmed = [c for c in reviewed_cells(sample) if c.confirmed and c.label != EXCLUDED]
    assert len(files) == len(confirmed) == 5
    assert sorted(f.label for f in files) == sorted(c.label for c in confirmed)
    # Reset one and export again from the CLI: the folder follows the review.
    request(server, "POST", "/api/correct", {"cell": grey.id, "action": "reset"})
    dest = tmp_path / "site"
    assert cli.run(["review", str(sample.path), "--export", str(dest)]) == 0
    assert len(scan_class_folders(dest)) == 4


def test_exporting_before_anything_is_confirmed_says_nothing_was_exported(sample, capsys):
    dest = sample.path.parent / "site"
    assert cli.run(["review", str(sample.path), "--export", str(dest)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"nothing exported to {dest}" in said and "confirm or reclassify" in said
    assert not dest.exists() or not list(dest.rglob("*.jpg"))


def test_a_smear_sample_serves_each_cell_with_its_field(tmp_path):
    import cv2
    from runtime_models import paint_field

    model = make_onnx(tmp_path / "m.onnx")
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "f0.png"), paint_field([(120, 120), (400, 300)], 0))
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--smear", "--out", str(tmp_path / "o")]
    assert cli.run([*args, "--no-live"]) == 0
    folder = SampleFolder.open(tmp_path / "o" / "in")
    srv = ReviewServer(Review(folder), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        state = json.loads(request(srv, "GET", "/api/state")[1])
        assert len(state["cells"]) == 2 and len({c["field"] for c in state["cells"]}) == 1
        field = state["cells"][0]["field"]
        assert state["fields"][field] == {"width": 640, "height": 480}
        status, body = request(srv, "GET", f"/files/fields/{field}.jpg")
        assert status == 200 and body[:2] == b"\xff\xd8"  # a JPEG
    finally:
        srv.shutdown()
        srv.server_close()


def _artifact_dir(tmp_path: Path) -> Path:
    """CI keeps $WBC_EDGE_ARTIFACTS (.ci/run sets it to .ci/artifacts); else the test's folder."""
    folder = Path(os.environ.get("WBC_EDGE_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _need_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install 'wbc-edge[dev]')")
    if not CHROMIUM or not Path(CHROMIUM).exists():
        missing.append("chromium (.ci/run installs it)")
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test, but lacks {', '.join(missing)}")
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def test_a_technologist_confirms_and_reclassifies_in_headless_chromium(server, sample, tmp_path):
    _need_browser()
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            page.wait_for_selector(".tile.focused")
            assert page.locator(".tile").count() == 9
            # The first cell shown: the first Neutrophil (classes in card order).
            first = page.locator(".tile.focused").get_attribute("data-cell")
            page.keyboard.press("2")  # reclassify as class 2, Lymphocyte
            page.wait_for_selector(f"#cell-{first}.confirmed")
            second = page.locator(".tile.focused").get_attribute("data-cell")
            page.keyboard.press("0")  # an artefact
            page.wait_for_selector(f"#cell-{second}.confirmed")
            page.keyboard.press("n")  # the next cell not yet confirmed
            third = page.locator(".tile.focused").get_attribute("data-cell")
            page.keyboard.press("Enter")  # confirm
            page.wait_for_selector(f"#cell-{third}.confirmed")
            fourth = page.locator(".tile.focused").get_attribute("data-cell")
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowLeft")
            assert page.locator(".tile.focused").get_attribute("data-cell") == fourth
            page.keyboard.press(" ")
            page.wait_for_selector(f"#cell-{fourth}.confirmed")
            shown = {
                row.get_attribute("data-class"): row.locator("td").nth(1).inner_text()
                for row in page.locator("#verified tbody tr.row").all()
            }
            total = page.locator("#wbc-total td").nth(1).inner_text()
            page.screenshot(path=str(_artifact_dir(tmp_path) / "review-page.png"), full_page=True)
        finally:
            browser.close()
    assert not errors

    # What the page shows is what was saved, and what the report code counts from it.
    saved = read_corrections(sample.corrections_path)
    assert set(saved) == {first, second, third, fourth}
    assert saved[first]["action"] == "reclassify" and saved[first]["class"] == "Lymphocyte"
    assert saved[second]["class"] == EXCLUDED
    assert saved[third]["action"] == saved[fourth]["action"] == "confirm"
    assert all(e["operator"] == "T1" for e in saved.values())
    results = load_results(sample)
    verified = results.verified
    assert verified.wbc == 3 and verified.excluded == 1 and verified.confirmed == 4
    assert shown == {c: str(verified.counts[c]) for c in verified.wbc_classes}
    assert total == "3"
