"""Student size x input size (issue 12): p50 batch-1 latency on ONNX Runtime CPU of each student
against EfficientNet-B3 at the same input size, and the test accuracy of trained run folders.

Measure (minutes; random weights, interleaved rounds, see benchmarks/studies/student_size_table.py):

    nice -n 15 .venv/bin/python benchmarks/studies/student_size.py \\
        --run /work/runs/student-kd-mild --out benchmarks/results/student-size

Add trained students later without timing again (re-renders OUT.md/OUT.json from OUT.json):

    .venv/bin/python benchmarks/studies/student_size.py --report-only --run RUN_DIR ...
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from wbc_edge.benchmarks.studies import student_size_table as ss
from wbc_edge.errors import UserError

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], help="trained run folder (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS / "student-size", help="record prefix")
    ap.add_argument("--students", default=",".join(ss.DEFAULT_STUDENTS))
    ap.add_argument("--sizes", default=",".join(map(str, ss.DEFAULT_SIZES)))
    ap.add_argument("--rounds", type=int, default=ss.DEFAULT_ROUNDS)
    ap.add_argument("--iters", type=int, default=ss.DEFAULT_ITERS, help="calls per round")
    ap.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    ap.add_argument("--work-dir", type=Path, default=Path("runs/student-size"))
    ap.add_argument("--report-only", action="store_true", help="re-render, time nothing")
    ap.add_argument(
        "--choice", type=Path, help="markdown: how the packaged student was chosen (kept after)"
    )
    args = ap.parse_args()
    command = shlex.join(["python", "benchmarks/studies/student_size.py", *sys.argv[1:]])
    try:
        if args.report_only:
            choice = args.choice.read_text() if args.choice else None
            paths = ss.render(args.out, args.run, command, choice)
        else:
            paths = ss.measure_and_write(
                args.out,
                args.run,
                command,
                students=[s for s in args.students.split(",") if s],
                sizes=[int(v) for v in args.sizes.split(",") if v],
                work_dir=args.work_dir,
                rounds=args.rounds,
                iters=args.iters,
                threads=args.threads,
            )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("wrote " + " and ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
