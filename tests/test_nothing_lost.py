"""Issue 32, cases 1-5: nothing lost, nothing repeated, nothing overwritten.

Files that come back are tried again; a newline in a file name stays one line of ``done.txt``;
``--report`` and ``--annotate`` refuse paths that would destroy or feed back data, before a byte
is written; a recorded file name that comes back with new content is classified again (and one
only touched is not)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, run_args, solid, write_images

from wbc_edge import cli
from wbc_edge.runtime import sources
from wbc_edge.runtime.sinks import RunOutput, read_records
from wbc_edge.runtime.sources import open_source


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")


def keys(out: Path) -> list[str]:
    return [r.key for r in read_records(out / "cells.jsonl")]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_case01_returned_files_are_retried(tmp_path, model, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    images = write_images(src, [RED, GREEN, BLUE, RED])
    kept = {p: p.read_bytes() for p in images[:2]}
    listed = sources.list_files

    def list_then_delete(opts):  # as if deleted between the listing and the read
        files = listed(opts)
        for p in kept:
            p.unlink()
        return files

    monkeypatch.setattr(sources, "list_files", list_then_delete)
    assert cli.run(run_args(src, model, out)) == 0
    monkeypatch.setattr(sources, "list_files", listed)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 2 and len(keys(out)) == 2
    for p, data in kept.items():  # put back
        p.write_bytes(data)
    seen = set()
    with (  # a watch offers them again
        RunOutput(out) as output,
        open_source(str(src), watch=True, done=output.resume, settle_s=0.0) as watch,
    ):
        for _ in range(20):
            frame = watch.capture(timeout=0.2)
            if frame is not None:
                seen.add(frame.key)
            if len(seen) == 2:
                break
    assert seen == {str(p) for p in kept}
    assert cli.run(run_args(src, model, out)) == 0  # and a rerun classifies them
    assert sorted(keys(out)) == sorted(str(p) for p in images)
    assert cli.run(run_args(src, model, out)) == 0  # once
    assert len(keys(out)) == 4


def test_case02_a_newline_in_a_file_name_stays_one_done_line(tmp_path, model):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    src.mkdir()
    cv2.imwrite(str(src / "x.jpg\nz.jpg"), solid(RED))
    assert cli.run(run_args(src, model, out)) == 0
    lines = (out / "done.txt").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == str(src / "x.jpg\nz.jpg")
    cv2.imwrite(str(src / "x.jpg"), solid(GREEN))  # named like the first half
    assert cli.run(run_args(src, model, out)) == 0
    assert sorted(keys(out)) == sorted([str(src / "x.jpg\nz.jpg"), str(src / "x.jpg")])


def test_case02_done_txt_of_earlier_versions_still_resumes(tmp_path, model):
    """A folder written before done.txt held JSON lines: bare keys, one per line."""
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    images = write_images(src, [RED, GREEN])
    assert cli.run(run_args(src, model, out, "--limit", "1")) == 0
    (out / "done.txt").write_text(f"{images[0]}\n")
    assert cli.run(run_args(src, model, out)) == 0
    assert sorted(keys(out)) == sorted(str(p) for p in images)


def test_case03_report_refuses_to_overwrite_what_is_not_a_report(tmp_path, model):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    images = write_images(src, [RED, GREEN])
    assert cli.run(run_args(src, model, out)) == 0
    before, image = snapshot(out), images[0].read_bytes()
    for target in (images[0], out / "cells.jsonl", out / "run.json", tmp_path / "notes.txt"):
        if target.suffix == ".txt":
            target.write_text("my notes")
        assert cli.run(run_args(src, model, out, "--report", str(target))) == 2, target
    assert images[0].read_bytes() == image and snapshot(out) == before
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    report = tmp_path / "copy.html"
    assert cli.run(run_args(src, model, out, "--report", str(report))) == 0
    assert report.read_text().lstrip().lower().startswith("<!doctype html")


def test_case03_report_error_says_what_to_do(tmp_path, model, capsys):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    images = write_images(src, [RED])
    assert cli.run(run_args(src, model, out, "--report", str(images[0]))) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--report" in err and "img_0000.jpg" in err and ".html" in err
    assert not out.exists()  # refused before the sample folder was made


@pytest.mark.parametrize("watch", [False, True])
def test_case04_annotate_into_the_source_folder_is_refused(tmp_path, model, watch):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    write_images(src, [RED, GREEN])
    before = snapshot(src)
    extra = ["--watch"] if watch else []
    for target in (src / "annotated", src / "sub" / "clip.mp4", src):
        assert cli.run(run_args(src, model, out, "--annotate", str(target), *extra)) == 2
    assert snapshot(src) == before and not out.exists()
    assert cli.run(run_args(src, model, out, "--annotate", str(tmp_path / "ann"))) == 0
    assert len(list((tmp_path / "ann").glob("*.jpg"))) == 2


def test_case05_a_recorded_file_replaced_by_new_content_is_classified_again(
    tmp_path, model, capsys
):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    src.mkdir()
    capture = src / "capture.jpg"
    cv2.imwrite(str(capture), solid(RED))
    assert cli.run(run_args(src, model, out)) == 0
    cv2.imwrite(str(capture), solid(GREEN))  # the camera writes its next capture
    st = capture.stat()
    os.utime(capture, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    capsys.readouterr()
    assert cli.run(run_args(src, model, out)) == 0
    assert "new content" in " ".join(capsys.readouterr().err.split())
    records = read_records(out / "cells.jsonl")
    assert [r.label for r in records] == ["Neutrophil", "Lymphocyte"]
    assert len({r.key for r in records}) == len({r.id for r in records}) == 2
    assert all(r.file == str(capture) for r in records)
    assert all((out / "cells" / f"{r.id}.jpg").is_file() for r in records)
    # Only touched, or copied back unchanged: not counted again, now or after a restart.
    os.utime(capture, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    assert cli.run(run_args(src, model, out)) == 0
    shutil.copy(capture, tmp_path / "keep.jpg")
    shutil.copy(tmp_path / "keep.jpg", capture)
    assert cli.run(run_args(src, model, out)) == 0
    assert cli.run(run_args(src, model, out)) == 0
    assert len(read_records(out / "cells.jsonl")) == 2


def test_case05_a_watch_classifies_every_capture_under_a_reused_name(tmp_path, model):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    src.mkdir()
    capture = src / "capture.jpg"
    seen = []
    with (
        RunOutput(out) as output,
        open_source(str(src), watch=True, done=output.resume, settle_s=0.0) as watch,
    ):
        for i, colour in enumerate([RED, GREEN, BLUE]):
            cv2.imwrite(str(capture), solid(colour))
            os.utime(capture, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
            for _ in range(20):
                frame = watch.capture(timeout=0.2)
                if frame is not None:
                    output.write_item(frame.key, [], frame.file, frame.stat, frame.digest)
                    seen.append(frame.key)
                    break
    assert len(seen) == len(set(seen)) == 3 and seen[0] == str(capture)
    last = (capture.stat().st_size, 10**18 + 2 * 10**9)
    with RunOutput(out) as output:  # a restart remembers each of them
        assert output.resume.item_key(str(capture), last) is None
