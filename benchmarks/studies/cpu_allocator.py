"""What the C allocator costs CPU training: one step of each workload under each allocator.

    python -m wbc_edge.benchmarks.studies.cpu_allocator OUT [--steps N]

Why: on these 2-core machines a background ``adapt --teacher`` spent 25-75% of its time in the
kernel, 256,000 minor page faults a second. PyTorch allocates each large activation (a batch
of 32 at 224 px through EfficientNet-Lite1: 150 MB tensors) with ``malloc``; glibc serves
anything over 32 MB with a fresh ``mmap`` and returns it with ``munmap`` on free, so every step
faults in and zeroes every page of every activation again. Two fixes need no code change:
glibc's own tunable ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35: those mappings
get transparent huge pages, 512x fewer faults) and jemalloc (``apt install libjemalloc2``;
``LD_PRELOAD``), which keeps freed pages for reuse (``MALLOC_CONF`` with decay off).

Each (workload, allocator) runs in its own process at 1 torch thread (allocator settings are
read at process start): one warm-up step, then ``--steps`` timed ones; wall seconds per step,
user and system CPU per step and minor faults per step. Workloads: the teacher's forward
pass as distillation and ``adapt --teacher`` make it (Lite1, batch 32, 224 px, no grad), a
student training step (tinyresnet_xs, batch 32, 224 px), a teacher fine-tuning step (Lite1,
batch 16, 224 px). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from wbc_edge.records import load_average, machine_line, markdown_table, utc_date, write_record

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
ALLOCATORS: dict[str, dict[str, str]] = {
    "glibc (default)": {},
    "glibc, GLIBC_TUNABLES=glibc.malloc.hugetlb=1": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "jemalloc, decay off (LD_PRELOAD)": {
        "LD_PRELOAD": str(JEMALLOC),
        "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1",
    },
}
WORKLOADS = (
    "teacher forward (Lite1, b32, no grad)",
    "student step (xs, b32)",
    "teacher step (Lite1, b16)",
)

_CHILD = r"""
import json, resource, sys, time
import torch
import timm
from wbc_edge.kd.students import create_student
torch.set_num_threads(1)
torch.manual_seed(0)
work, steps = sys.argv[1], int(sys.argv[2])
if work.startswith("student"):
    model, batch, grad = create_student("tinyresnet_xs", 9), 32, True
else:
    model = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=9)
    batch, grad = (32, False) if "forward" in work else (16, True)
x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 9, (batch,))
if grad:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
else:
    model.eval()
def step():
    if grad:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    else:
        with torch.no_grad():
            model(x)
step()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "wall_s": (t1 - t0) / steps,
    "user_s": (r1.ru_utime - r0.ru_utime) / steps,
    "sys_s": (r1.ru_stime - r0.ru_stime) / steps,
    "minflt": (r1.ru_minflt - r0.ru_minflt) / steps,
}))
"""


def _why() -> str:
    """The module doc's "Why" paragraph, for the record's reader."""
    parts = (__doc__ or "").split("\n\n")
    return next((p for p in parts if p.startswith("Why")), "").replace("\n", " ")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    record: dict = {
        "date": utc_date(),
        "command": "python -m wbc_edge.benchmarks.studies.cpu_allocator " + shlex.join(argv),
        "machine": machine_line(),
        "load_avg_1m": [load_average()],
        "steps": args.steps,
        "torch_threads": 1,
        "results": [],
    }
    for work in WORKLOADS:
        base = None
        for name, env in ALLOCATORS.items():
            if "LD_PRELOAD" in env and not JEMALLOC.is_file():
                print(f"{name}: skipped ({JEMALLOC} not installed)")
                continue
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, work, str(args.steps)],
                env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or r["wall_s"]
            row = {"workload": work, "allocator": name, **r, "speedup": base / r["wall_s"]}
            record["results"].append(row)
            print(row, flush=True)
    record["load_avg_1m"].append(load_average())
    table = markdown_table(
        ["workload", "allocator", "s per step", "user s", "system s", "minor faults", "speed-up"],
        [
            [
                r["workload"],
                r["allocator"],
                f"{r['wall_s']:.3f}",
                f"{r['user_s']:.3f}",
                f"{r['sys_s']:.3f}",
                f"{r['minflt']:,.0f}",
                f"{r['speedup']:.2f}x",
            ]
            for r in record["results"]
        ],
        "llrrrrr",
    )
    text = "\n".join(
        [
            "# The C allocator and CPU training",
            "",
            f"- Date: {record['date']}; machine: {record['machine']}; load average (1 min) "
            f"{record['load_avg_1m'][0]} before, {record['load_avg_1m'][1]} after",
            f"- Command: `{record['command']}`",
            f"- Each row its own process, 1 torch thread, 1 warm-up step then {args.steps} "
            "timed; speed-up against glibc's default in the same workload",
            "",
            table,
            "",
            _why(),
        ]
    )
    write_record(args.out, record, text)
    print(f"wrote {args.out}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
