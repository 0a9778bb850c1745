"""The student size x input size record: interleaved timing through the ONNX backend, the
speed-up against the baseline at the same size, accuracy filled from run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wbc_edge.benchmarks.studies import student_size_table as ss
from wbc_edge.errors import UserError
from wbc_edge.kd.checkpoint import save_checkpoint
from wbc_edge.kd.students import create_student
from wbc_edge.model.card import ModelCard, Preprocess


def fake_run(folder: Path, size: int, val: float, test: float) -> Path:
    """A finished run folder as the trainer leaves it: best.pt with its card, summary.json."""
    card = ModelCard("tinyresnet_xs", ["a", "b", "c"], Preprocess(input_size=size))
    save_checkpoint(folder / "best.pt", create_student("tinyresnet_xs", 3), card)
    summary = {
        "method": "kd",
        "epochs": 2,
        "best_epoch": 1,
        "best_val_accuracy": val,
        "test_accuracy": test,
        "test_macro_f1": test - 0.01,
        "teachers": [{"architecture": "tf_efficientnet_lite1"}],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    # The kept epoch's val accuracy (epoch 1 here) differs from the best one on purpose.
    rows = ["epoch,val_accuracy", f"1,{val - 0.05}", f"2,{val}"]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_record_times_interleaved_and_fills_accuracy_from_runs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    lines: list[str] = []
    out = tmp_path / "student-size"
    first = fake_run(tmp_path / "run-a", 32, 0.90, 0.88)
    ss.measure_and_write(
        out,
        [first],
        "cmd",
        students=["tinyresnet_xs"],
        sizes=[32],
        work_dir=tmp_path / "w",
        rounds=2,
        iters=3,
        baseline="tinyresnet_s",
        log=lines.append,
    )
    record = json.loads(out.with_suffix(".json").read_text())
    base, student = record["latency"]
    assert (base["model"], student["model"]) == ("tinyresnet_s", "tinyresnet_xs")
    assert base["calls"] == student["calls"] == 6 and len(lines) == 2  # 2 rounds x 3 calls
    assert student["speedup"] == pytest.approx(base["p50_ms"] / student["p50_ms"], rel=1e-2)
    assert student["params"] < base["params"] and len(student["load_average"]) == 2
    md = out.with_suffix(".md").read_text()
    assert "| tinyresnet_xs | 32 |" in md and "88.00%" in md
    # A re-render adds runs without timing again; the cell shows each run's test accuracy.
    second = fake_run(tmp_path / "run-b", 32, 0.95, 0.80)
    ss.render(out, [second], "cmd2")
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["latency"] == record["latency"] and len(again["runs"]) == 2
    row = next(
        line
        for line in out.with_suffix(".md").read_text().splitlines()
        if line.startswith("| tinyresnet_xs | 32 |")
    )
    assert "88.00% / 80.00%" in row
    # The command that timed the models stays in the record after a re-render.
    assert "Latencies measured by: `cmd`" in out.with_suffix(".md").read_text()
    # Each run's kept epoch's own val accuracy (what a choice between runs reads); a choice
    # text given once stays in the record through later re-renders.
    ss.render(out, [], "cmd3", choice="Chosen by the kept epoch's val accuracy.")
    ss.render(out, [], "cmd4")
    md = out.with_suffix(".md").read_text()
    assert "| 1 (best.pt) | 85.00% | 90.00% |" in md
    assert "## How the packaged student was chosen" in md and "kept epoch's val" in md
    with pytest.raises(UserError, match="summary.json"):
        ss.render(out, [tmp_path / "nothing"], "cmd5")
