"""The stream's fast path (issue 31): fused preprocessing, crops kept as their source's bytes,
records appended in batches that a kill -9 neither loses nor repeats."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_models import make_onnx, solid, write_images
from test_runtime_pipeline import COLOURS, assert_each_once, csv_rows

from wbc_edge import cli
from wbc_edge.model.card import Preprocess
from wbc_edge.model.preprocess import FusedPreprocess
from wbc_edge.model.stain import StainReference
from wbc_edge.runtime.archive import CellArchive
from wbc_edge.runtime.sample import SampleFolder
from wbc_edge.runtime.sinks import RunOutput, read_records
from wbc_edge.runtime.sources import Frame

REPO = Path(__file__).resolve().parents[1]
STAIN = StainReference(mean=(150.0, 140.0, 120.0), std=(30.0, 8.0, 9.0))
CARDS = [
    Preprocess(224, interpolation="linear"),  # the packaged student's
    Preprocess(
        64, interpolation="area", channel_order="BGR", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)
    ),
    Preprocess(48, crop_fraction=0.8, crop_aspect=1.0, interpolation="cubic"),
    Preprocess(32, interpolation="nearest", stain=STAIN),
]


def images() -> list[np.ndarray]:
    """Crops larger, smaller and the same size as the inputs, gray, BGRA and a strided view."""
    rng = np.random.default_rng(0)
    out = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in [(363, 360), (40, 56), (224, 224)]]
    out += [solid((40, 90, 200), size=120, seed=1), rng.integers(0, 256, (90, 70), np.uint8)]
    out += [
        rng.integers(0, 256, (80, 80, 4), np.uint8),
        rng.integers(0, 256, (300, 300, 3), np.uint8)[::2, 10:],
    ]
    return out


@pytest.mark.parametrize("pre", CARDS, ids=lambda p: f"{p.input_size}px-{p.interpolation}")
def test_fused_preprocessing_equals_the_cards_reference(pre):
    ims = images()
    reference = pre.normalize(np.stack([pre.resize(im) for im in ims]))  # the card's two steps
    batch = np.full((len(ims) + 2, 3, pre.input_size, pre.input_size), np.nan, np.float32)
    FusedPreprocess(pre).into(batch[1 : 1 + len(ims)], ims)  # into a slice of a batch buffer
    fused = batch[1 : 1 + len(ims)]
    # Within 1/255 per pixel in [0, 1] units (one grey level); in fact the same float32 values.
    assert (
        np.abs((fused - reference) * np.asarray(pre.std, np.float32)[:, None, None]).max()
        <= 1 / 255
    )
    assert np.array_equal(fused, reference)
    assert np.isnan(batch[0]).all() and np.isnan(batch[-1]).all()  # nothing outside its rows
    assert np.array_equal(pre(ims), reference)  # the card's own call runs the fused path


def test_fused_preprocessing_is_safe_from_several_threads():
    pre = CARDS[0]
    ims = images()[:4] * 8
    reference = pre.normalize(np.stack([pre.resize(im) for im in ims]))
    fused, results = FusedPreprocess(pre), {}

    def work(k: int) -> None:
        results[k] = fused(ims[k::2])

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(results[0], reference[0::2]) and np.array_equal(
        results[1], reference[1::2]
    )


def test_an_archived_crop_is_its_source_files_bytes(tmp_path):
    model = make_onnx(tmp_path / "m.onnx", size=32)
    images_in = write_images(tmp_path / "in", COLOURS * 4)
    out = tmp_path / "out"
    assert (
        cli.run(["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"])
        == 0
    )
    records = read_records(out / "in" / "cells.jsonl")
    assert len(records) == len(images_in)
    for r in records:
        kept = out / "in" / "cells" / f"{r.id}.jpg"
        assert kept.read_bytes() == Path(r.file).read_bytes()
        assert os.path.samefile(kept, r.file)  # a hard link: one file, nothing copied
    assert not list((out / "in" / "cells").glob("*.tmp"))


def _item(source: Path, data: bytes, stat: tuple[int, int] | None, key: str = "k"):
    from wbc_edge.runtime.pipeline import Item
    from wbc_edge.runtime.sinks import CellRecord

    frame = Frame("in", 0, key, None, file=str(source), data=None)
    frame.stat = stat
    record = CellRecord("t", "in", 0, str(source), 0, (0, 0, 1, 1), "N", 0.9, [], False, key=key)
    return Item(frame, records=[record], encoded=data)


def test_an_archived_crop_is_copied_where_a_link_cannot_be_made(tmp_path, monkeypatch):
    source = write_images(tmp_path / "in", COLOURS[:1])[0]
    data = source.read_bytes()
    stat = (os.stat(source).st_size, os.stat(source).st_mtime_ns)
    archive = CellArchive(SampleFolder(tmp_path / "s"), 160, smear=False)
    calls = []

    def no_links(src, dst):
        calls.append(dst)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    archive.save_all([_item(source, data, stat, "a"), _item(source, data, stat, "b")])
    kept = sorted((tmp_path / "s" / "cells").glob("*.jpg"))
    assert len(kept) == 2 and all(k.read_bytes() == data for k in kept)
    assert not any(os.path.samefile(k, source) for k in kept)
    assert len(calls) == 1 and archive.link is False  # refused once, copies from then on


def test_a_source_replaced_since_it_was_read_is_kept_as_the_bytes_classified(tmp_path):
    source = write_images(tmp_path / "in", COLOURS[:1])[0]
    data = source.read_bytes()
    stat = (os.stat(source).st_size, os.stat(source).st_mtime_ns)
    replacement = tmp_path / "new.jpg"
    replacement.write_bytes(data + b"later bytes")
    os.replace(replacement, source)  # another file under the name since it was read
    archive = CellArchive(SampleFolder(tmp_path / "s"), 160, smear=False)
    archive.save_all([_item(source, data, stat)])
    (kept,) = (tmp_path / "s" / "cells").glob("*.jpg")
    assert kept.read_bytes() == data and not os.path.samefile(kept, source)
    # Kept again after a kill (the name already there): replaced, still the bytes classified.
    archive.save_all(
        [_item(source, source.read_bytes(), (os.stat(source).st_size, os.stat(source).st_mtime_ns))]
    )
    assert kept.read_bytes() == source.read_bytes() and os.path.samefile(kept, source)


# A child that writes two batches of eight single-cell items and is killed (SIGKILL) in the
# second: after its JSONL append (before CSV and done.txt), or halfway through the JSONL append
# (a short write: some records complete, one torn).
_WRITER = """
import os, signal, sys
from wbc_edge.runtime.sinks import CellRecord, RunOutput
out, where = sys.argv[1], sys.argv[2]
def rec(i):
    key = f"/data/cell_{i:02d}.jpg"
    return CellRecord("t", "in", i, key, 0, (0, 0, 9, 9), "N", 0.9, [("N", 0.9)], False, key=key)
def batch(first):
    keys = [(i, f"/data/cell_{i:02d}.jpg") for i in range(first, first + 8)]
    return [(key, [rec(i)], "", (100 + i, 7), "d") for i, key in keys]
with RunOutput(out) as o:
    o.write_items(batch(0))
    real = o._write
    def dying(f, text):
        if f is o._jsonl:
            if where == "mid-jsonl":
                real(f, text[: len(text) // 2 + 7])
            else:
                real(f, text)
            os.kill(os.getpid(), signal.SIGKILL)
        real(f, text)
    o._write = dying
    o.write_items(batch(8))
"""


@pytest.mark.parametrize("where", ["after-jsonl", "mid-jsonl"])
def test_records_written_in_batches_survive_kill_9(tmp_path, where):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(out), where], cwd=REPO)
    assert proc.returncode == -9
    complete = read_records(out / "cells.jsonl")
    expected = 16 if where == "after-jsonl" else len(complete)
    assert 8 < len(complete) <= expected
    keys = [f"/data/cell_{i:02d}.jpg" for i in range(16)]
    with RunOutput(out) as output:  # reopened: torn line cut, CSV levelled with the JSONL
        done = output.done()
        assert done == set(keys[: len(complete)])  # every complete record counts as done
        assert len(csv_rows(out)) == len(complete)
        # The restarted run writes what is not done, in batches again.
        rest = [(k, [_record(k, i)], "", (100 + i, 7), "d") for i, k in enumerate(keys)]
        rest = [entry for entry in rest if entry[0] not in done]
        output.write_items(rest)
    records = read_records(out / "cells.jsonl")
    assert sorted(r.key for r in records) == keys  # nothing lost, nothing repeated
    assert [row["file"] for row in csv_rows(out)] == [r.file for r in records]
    done_lines = [json.loads(line)["key"] for line in (out / "done.txt").read_text().splitlines()]
    assert len(done_lines) == len(set(done_lines)) and set(done_lines) <= set(keys)


def _record(key: str, i: int):
    from wbc_edge.runtime.sinks import CellRecord

    return CellRecord("t", "in", i, key, 0, (0, 0, 9, 9), "N", 0.9, [("N", 0.9)], False, key=key)


def test_a_run_killed_mid_batch_and_restarted_neither_repeats_nor_skips(tmp_path):
    """kill -9 of `wbc-edge run` writing groups of eight, then a second run: each image once."""
    slow = make_onnx(tmp_path / "slow.onnx", size=128, extra_nodes=30)
    images_in = write_images(tmp_path / "in", COLOURS * 30)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from wbc_edge.cli import main; main()", "run"]
    cmd += [str(tmp_path / "in"), "-m", str(slow), "--out", str(out), "--no-live", "--batch", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jsonl = out / "in" / "cells.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        jsonl.is_file() and jsonl.read_text().count("\n") >= 16
    ):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    before = len(read_records(jsonl))
    assert 16 <= before < len(images_in), "the kill must land mid-run for this test to mean much"
    assert (
        cli.run(["run", str(tmp_path / "in"), "-m", str(slow), "--out", str(out), "--no-live"]) == 0
    )
    assert_each_once(out / "in", images_in)
    assert all((out / "in" / "cells" / f"{r.id}.jpg").is_file() for r in read_records(jsonl))
