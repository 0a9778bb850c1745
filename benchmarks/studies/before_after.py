"""Behaviour unchanged by a refactor: the same predictions, records and reports before and after.

Issue 30 moved the model core (``wbc_edge/model/``) and put one ``Model`` under ``run``, the
Python API, ``evaluate`` and ``bench``. This study runs the same images through two installs of
wbc-edge, the one before (a wheel of an older commit, unpacked into a folder given as
``--old``: ``pip install --no-deps --target OLD wheel``) and this checkout's, and compares:

- ``run`` on a folder of crops (PBC test crops, another lab's crops, phantoms): every record's
  label, probability, top-3, uncertain/ood flags, box and key; the differential in
  ``summary.json``; the report's text with its dates taken out;
- ``run --smear`` on whole smear fields (BCCD): the same, boxes included;
- the Python API on the same crops and fields: labels, probabilities, reasons and counts;
- ``evaluate`` on a split manifest: accuracy and every sample's probabilities.

Each install runs in its own process from a neutral folder, so neither can import the other.
Usage (from the checkout; ``../shared/data`` must be there)::

    git worktree add /tmp/old f39d1b9 && pip wheel --no-deps /tmp/old -w /tmp/wheel
    pip install --no-deps --target runs/oldpkg /tmp/wheel/wbc_edge-*.whl
    python benchmarks/studies/before_after.py --old runs/oldpkg --old-commit f39d1b9 \\
        --out benchmarks/results/refactor-before-after
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
PBC_SPLIT = REPO / "benchmarks" / "results" / "pbc9-split.csv"
MODEL = REPO / "wbc_edge" / "models" / "student-tinyresnet_xs_wide.onnx"  # the packaged one
# Fields a record carries that say when, not what: left out of the comparison.
WHEN = ("time",)

API = r"""
import json, sys
import wbc_edge
crops, fields = json.loads(sys.argv[1]), json.loads(sys.argv[2])
m = wbc_edge.load()
out = {"cells": [], "fields": []}
for p in m(crops):
    out["cells"].append([p.label, round(p.prob, 6), p.uncertain, p.ood, p.reason, list(p.box)])
for f in m(fields, smear=True):
    c = f.counts()
    out["fields"].append([[[p.label, round(p.prob, 6), p.reason, list(p.box)] for p in f],
                          dict(c), dict(c.not_counted)])
print(json.dumps(out))
"""


def _env(pythonpath: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _wbc(pythonpath: str | None, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The console script, not ``python -m``: that would put the working folder on sys.path.
    cmd = [str(Path(sys.executable).parent / "wbc-edge"), *args]
    return subprocess.run(
        cmd, cwd=cwd, env=_env(pythonpath), capture_output=True, text=True, timeout=1800
    )


def _records(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (folder / "cells.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append({k: v for k, v in r.items() if k not in WHEN})
    return sorted(rows, key=lambda r: (r.get("key", ""), r.get("cell", 0)))


def _report_text(folder: Path) -> str:
    """The report's HTML with dates, times and run-specific paths taken out."""
    html = (folder / "report.html").read_text()
    html = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d)?(\.\d+)?( UTC|Z)?", "<when>", html)
    html = re.sub(r"\d+(\.\d+)? s\b", "<s>", html)
    return re.sub(r"/tmp/[^\s\"'<]+", "<tmp>", html)


def _run(pythonpath: str | None, source: Path, out: Path, smear: bool, cwd: Path) -> dict:
    args = ["run", str(source), "--out", str(out), "--no-live", "--sample", "s"]
    res = _wbc(pythonpath, *args, *(["--smear"] if smear else []), cwd=cwd)
    if res.returncode != 0:
        raise SystemExit(f"run failed ({pythonpath or 'new'}):\n{res.stderr[-2000:]}")
    folder = out / "s"
    summary = json.loads((folder / "summary.json").read_text())
    if "differential" not in summary:
        raise SystemExit(f"{folder / 'summary.json'} has no differential")
    return {
        "records": _records(folder),
        "differential": summary["differential"],
        "report": _report_text(folder),
    }


def _compare(name: str, old: Any, new: Any) -> dict[str, Any]:
    same = old == new
    row: dict[str, Any] = {"what": name, "same": same}
    if isinstance(old, list) and isinstance(new, list):
        row["n"] = len(new)
        row["differing"] = sum(a != b for a, b in zip(old, new, strict=False)) + abs(
            len(old) - len(new)
        )
    return row


def _crop_folder(tmp: Path, per_source: int) -> Path:
    """A folder of links to real crops (PBC's test split and the four other labs) and phantoms."""
    import csv

    folder = tmp / "crops"
    folder.mkdir()
    with open(PBC_SPLIT, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    step = max(1, len(rows) // per_source)
    picks = [PBC_SPLIT.parent / r["path"] for r in rows[::step]][:per_source]
    images = (".jpg", ".jpeg", ".png", ".bmp")
    for lab in ("deepapl", "lisc", "tecom", "cvblog"):
        files = sorted(f for f in (SHARED / "multilab" / lab).rglob("*") if f.suffix in images)
        picks += files[:: max(1, len(files) // per_source)][:per_source]
    for i, p in enumerate(picks):
        (folder / f"{i:04d}{p.suffix.lower()}").symlink_to(p.resolve())
    synth = tmp / "phantoms"
    res = _wbc(None, "data", "synth", "--out", str(synth), "--per-class", "3", cwd=tmp)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    for i, p in enumerate(sorted(synth.rglob("*.png")) + sorted(synth.rglob("*.jpg"))):
        shutil.copy(p, folder / f"synth-{i:03d}{p.suffix}")
    return folder


def _field_folder(tmp: Path, n: int) -> Path:
    folder = tmp / "fields"
    folder.mkdir()
    images = sorted((SHARED / "bccd-smears" / "JPEGImages").glob("*.jpg"))
    for p in images[:: max(1, len(images) // n)][:n]:
        (folder / p.name).symlink_to(p.resolve())
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="folder holding the older wbc_edge package")
    ap.add_argument("--old-commit", required=True, help="the commit that wheel was built from")
    ap.add_argument("--per-source", type=int, default=150)
    ap.add_argument("--fields", type=int, default=60)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.old = str(Path(args.old).resolve())  # the runs work in a scratch folder
    sys.path.insert(0, str(REPO))
    from wbc_edge.records import markdown_table, record_header, write_record

    rows = []
    with tempfile.TemporaryDirectory(prefix="wbc-before-after-") as t:
        tmp = Path(t)
        crops, fields = _crop_folder(tmp, args.per_source), _field_folder(tmp, args.fields)
        for label, source, smear in (("run, crops", crops, False), ("run --smear", fields, True)):
            old = _run(args.old, source, tmp / f"old-{smear}", smear, tmp)
            new = _run(None, source, tmp / f"new-{smear}", smear, tmp)
            rows.append(_compare(f"{label}: records", old["records"], new["records"]))
            rows.append(
                _compare(f"{label}: differential", old["differential"], new["differential"])
            )
            rows.append(_compare(f"{label}: report text", old["report"], new["report"]))
        crop_files = json.dumps(sorted(str(p) for p in crops.iterdir())[:60])
        field_files = json.dumps(sorted(str(p) for p in fields.iterdir())[:10])
        api = {}
        for who, path in (("old", args.old), ("new", None)):
            res = subprocess.run(
                [sys.executable, "-c", API, crop_files, field_files],
                cwd=tmp,
                env=_env(path),
                capture_output=True,
                text=True,
                timeout=900,
            )
            if res.returncode != 0:
                raise SystemExit(f"API failed ({who}):\n{res.stderr[-2000:]}")
            api[who] = json.loads(res.stdout.splitlines()[-1])
        rows.append(_compare("API: cells", api["old"]["cells"], api["new"]["cells"]))
        rows.append(_compare("API: smear fields", api["old"]["fields"], api["new"]["fields"]))
        ev = {}
        for who, path in (("old", args.old), ("new", None)):
            out = tmp / f"eval-{who}"
            res = _wbc(
                path,
                "evaluate",
                "--model",
                str(MODEL),
                "--data",
                str(PBC_SPLIT),
                "--split",
                "test",
                "--out",
                str(out),
                cwd=tmp,
            )
            if res.returncode != 0:
                raise SystemExit(f"evaluate failed ({who}):\n{res.stderr[-2000:]}")
            metrics = json.loads((out / "metrics.json").read_text())
            when = ("date", "command", "machine", "seconds")  # the run, not its result
            ev[who] = {k: v for k, v in metrics.items() if k not in when}
            ev[who]["predictions.csv"] = (out / "predictions.csv").read_text()
        rows.append(_compare("evaluate: metrics and predictions.csv", ev["old"], ev["new"]))
    header = record_header()
    data = {**header, "old_commit": args.old_commit, "rows": rows}
    table = markdown_table(
        ["compared", "identical", "items", "differing"],
        [
            [r["what"], "yes" if r["same"] else "NO", r.get("n", ""), r.get("differing", "")]
            for r in rows
        ],
    )
    md = (
        "# Refactor: behaviour before and after\n\n"
        f"The same images through wbc-edge at commit `{args.old_commit}` (before the model core "
        "and `Model`) and this checkout, each in its own process (`benchmarks/studies/"
        "before_after.py`). Records are compared field by field without their time stamps; "
        "reports without dates and durations.\n\n"
        f"{table}\n\n"
        f"Command: `{header['command']}`; {header['machine']}; {header['date']}.\n"
    )
    write_record(args.out, data, md)
    print(md)
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
