"""Does channels_last (NHWC) speed up training on this CPU? Writes kd-channels-last.md/json.

Times one AdamW training step (forward, backward, update) and one eval forward at batch 64,
128 px, for the student (tinyresnet_xs) and the teacher (tf_efficientnet_lite0), in NCHW and
NHWC memory formats; the median of several steps after warm-up.

    .venv/bin/python benchmarks/studies/kd_channels_last.py [--threads 2] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from wbc_edge.kd.students import create_student
from wbc_edge.kd.teacher import create_teacher
from wbc_edge.records import machine_line, markdown_table, utc_date, write_record


def time_model(name: str, channels_last: bool, steps: int, batch: int = 64) -> dict[str, float]:
    torch.manual_seed(0)
    if name.startswith("tf_"):
        model = create_teacher(name, 9, weights=None)
    else:
        model = create_student(name, 9)
    x, y = torch.randn(batch, 3, 128, 128), torch.randint(0, 9, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    model.train()
    train_times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_times.append(time.perf_counter() - t)
    model.eval()
    eval_times = []
    with torch.no_grad():
        for _ in range(steps + 2):
            t = time.perf_counter()
            model(x)
            eval_times.append(time.perf_counter() - t)
    return {
        "train_step_s": statistics.median(train_times[2:]),
        "eval_forward_s": statistics.median(eval_times[2:]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/kd-channels-last")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in ("tinyresnet_xs", "tf_efficientnet_lite0"):
        nchw = time_model(name, False, args.steps)
        nhwc = time_model(name, True, args.steps)
        rows.append({"model": name, "nchw": nchw, "channels_last": nhwc})
    payload = {
        "command": f".venv/bin/python benchmarks/studies/kd_channels_last.py --threads "
        f"{args.threads} --steps {args.steps}",
        "machine": machine_line(),
        "date": utc_date(),
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": 64,
        "input_size": 128,
        "rows": rows,
    }
    text = markdown(payload)
    write_record(args.out, payload, text)
    print(text, end="")


def markdown(payload: dict[str, Any]) -> str:
    rows = []
    for r in payload["rows"]:
        a, b = r["nchw"], r["channels_last"]
        rows.append(
            [
                r["model"],
                f"{a['train_step_s']:.3f}",
                f"{b['train_step_s']:.3f}",
                f"{a['train_step_s'] / b['train_step_s']:.2f}x",
                f"{a['eval_forward_s']:.3f}",
                f"{b['eval_forward_s']:.3f}",
                f"{a['eval_forward_s'] / b['eval_forward_s']:.2f}x",
            ]
        )
    header = ["model", "train NCHW", "train channels_last", "speed-up", "eval NCHW"]
    header += ["eval channels_last", "speed-up"]
    lines = [
        "# channels_last on this CPU",
        "",
        f"- date: {payload['date']}; machine: {payload['machine']}; torch {payload['torch']}, "
        f"{payload['threads']} threads",
        f"- command: `{payload['command']}`",
        "- median seconds per step, batch 64, 128 px (train step = forward + backward + AdamW)",
        "",
        markdown_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
