"""Where a stream's CPU goes: py-spy over the run pipeline alone, summarised by function.

    python -m wbc_edge.benchmarks.studies.stream_profile SOURCE MODEL OUT.json [--rate 250]

Runs ``py-spy record`` (``pip install py-spy``) over a child that streams SOURCE through
:class:`~wbc_edge.runtime.pipeline.Pipeline` exactly as ``bench --stream`` does (same archive,
records, workers, batch) and nothing else (no decode-limit passes), then keeps the samples of the
pipeline's threads that were working: a sample whose innermost Python frame waits (a condition,
an event, a semaphore, a queue, an idle pool worker) is left out. Self is the innermost Python
frame (a C call such as ``cv2.resize`` or ``Session.run`` counts in the frame that made it).

What a sampling profiler can and cannot say here: py-spy reads the threads' stacks from outside,
so the time between two samples is charged to whatever line a thread was on; a line that makes a
system call while holding the GIL (``time.thread_time``, ``os.stat``) is over-represented when
the machine is busy, because the kernel may switch the thread out on the way back. The per-stage
thread-CPU figures of ``bench --stream`` are the measurement; this says what is inside them.

Run with ``PYTHONPATH`` pointing at another checkout's package to profile that one (the child
runs from a scratch folder, so the working directory's ``wbc_edge/`` does not come first).
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

WAITING = (
    "Condition.wait",
    "Event.wait",
    "Semaphore.acquire",
    "Queue.get (",
    "_worker (concurrent/futures/thread.py",
    "Thread.join",
    "DropOldestQueue.get",
    "Pipeline.wait",
)

_CHILD = """
import sys, tempfile, time
from pathlib import Path
from wbc_edge.runtime.archive import CellArchive, crop_px_for
from wbc_edge.model.model import Model
from wbc_edge.runtime.pipeline import Pipeline, PipelineConfig
from wbc_edge.runtime.sample import SampleFolder
from wbc_edge.runtime.sinks import RunOutput
from wbc_edge.runtime.sources import list_files, open_source, parse_uri
src, model = sys.argv[1], sys.argv[2]
for p in list_files(parse_uri(src)):
    p.read_bytes()  # the page cache holds them, as for bench --stream
with Model.load(Path(model)) as m, tempfile.TemporaryDirectory() as tmp:
    with open_source(src) as source, RunOutput(Path(tmp) / "out") as output:
        size = crop_px_for(m.card.preprocess.input_size)
        archive = CellArchive(SampleFolder(Path(tmp) / "out"), size, False)
        keep = archive if hasattr(archive, "save_all") else archive.save
        stats = Pipeline(source, m, output, PipelineConfig(), archive=keep).run()
print(f"{stats.cells} cells in {time.perf_counter() - stats.started:.2f} s")
"""


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> the working samples' self and inclusive shares."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    working = waiting = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or ("Pipeline." not in stack and "read_frame" not in stack):
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")[1:]]
        if any(w in frames[-1] for w in WAITING):
            waiting += n
            continue
        working += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n

    def share(counter: collections.Counter[str], keep: Any) -> list[list[Any]]:
        rows = [(f, v) for f, v in counter.most_common() if keep(f)][:top]
        return [[f, round(100 * v / max(1, working), 1)] for f, v in rows]

    return {
        "working_samples": working,
        "waiting_samples": waiting,
        "self_percent": share(own, lambda f: True),
        "inclusive_percent": share(
            inclusive, lambda f: "runtime/" in f and not re.search(r"_guard|_call \(|run \(", f)
        ),
    }


def _frame(text: str) -> str:
    """``func (path:line)`` -> ``func (package-relative path)``."""
    text = re.sub(r":\d+\)$", ")", text)
    return re.sub(r"\((?:.*/)?(?:site-packages|wbc_edge|python3\.\d+)/", "(", text)


def main(argv: list[str]) -> int:
    source, model, out = argv[0], argv[1], Path(argv[2])
    rate = argv[argv.index("--rate") + 1] if "--rate" in argv else "250"
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.txt"
        cmd = ["py-spy", "record", "-r", rate, "--format", "raw", "-o", str(raw_path), "--"]
        cmd += [
            sys.executable,
            "-c",
            _CHILD,
            str(Path(source).absolute()),
            str(Path(model).absolute()),
        ]
        py_spy = Path(sys.executable).with_name("py-spy")
        cmd[0] = str(py_spy) if py_spy.exists() else "py-spy"
        # Run from the scratch folder: ``python -c`` puts its working directory first on the
        # path, and a checkout's own wbc_edge/ there would hide the one PYTHONPATH names.
        run = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp)
        result = summarise(raw_path.read_text())
    from wbc_edge.records import load_average, utc_date

    result.update(
        date=utc_date(),
        load_avg_1m=load_average(),
        source=source,
        model=model,
        rate_hz=int(rate),
        run=next((x for x in (run.stdout + run.stderr).splitlines() if "cells in" in x), ""),
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
