"""Soak: N images through ``wbc-edge run --watch`` while its resident memory is sampled each second.

A feeder copies crops from a folder into the watched inbox (written under a ``.tmp`` name and
renamed, as a careful writer does) at a fixed rate, cycling through the source images under new
names until N are in; the run classifies them as they arrive. Every second the run's RSS
(``VmRSS`` of the ``wbc-edge`` process) and the number of items it has finished (lines of
``done.txt``) are sampled. When all N are done the run gets SIGINT (it drains and writes its
summary). Growth is judged after warm-up: the slope of RSS against items done over the second
half of the run, in MB per 1,000 images.

    python benchmarks/studies/soak_watch.py --images 10000 --rate 150 \\
        --source ../shared/data/pbc9 --model MODEL --work /tmp/soak --out benchmarks/results

Writes ``<name>.json`` (samples, slope, command, machine, load) and ``<name>.png`` (the curve).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from wbc_edge.records import load_average, utc_date


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except OSError:
        return 0


def feed(sources: list[Path], inbox: Path, n: int, rate: float, stop: threading.Event) -> None:
    """Copy ``n`` images into ``inbox`` at ``rate`` per second (atomic rename, unique names)."""
    start = time.monotonic()
    for i in range(n):
        if stop.is_set():
            return
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        src = sources[i % len(sources)]
        sub = inbox / f"batch{i // 1000:03d}"  # a lab's exporter writes one folder per slide
        sub.mkdir(exist_ok=True)
        tmp = sub / f"img{i:06d}{src.suffix}.tmp"
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, sub / f"img{i:06d}{src.suffix}")


def plot(samples: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [s["rss_mb"] for s in samples], color="tab:blue", label="RSS (MB)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("resident memory, MB", color="tab:blue")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, [s["done"] for s in samples], color="tab:orange", label="images done")
    ax2.set_ylabel("images done", color="tab:orange")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=150.0, help="images written per second")
    ap.add_argument("--source", type=Path, required=True, help="folder of images to cycle")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="scratch: inbox and results")
    ap.add_argument("--out", type=Path, required=True, help="where NAME.json/.png go")
    ap.add_argument("--name", default="runtime-soak")
    ap.add_argument("--run-args", default="--poll 0.5 --settle 0.5", help="extra run options")
    args = ap.parse_args(argv)

    from wbc_edge.benchmarks.machine import machine_info

    sources = sorted(p for p in args.source.rglob("*.jpg"))
    if not sources:
        raise SystemExit(f"{args.source}: no .jpg files")
    inbox, results = args.work / "inbox", args.work / "results"
    if inbox.exists() or results.exists():
        raise SystemExit(f"{args.work} holds an earlier soak: give a new --work")
    inbox.mkdir(parents=True)
    sample = results / inbox.name  # `run` writes each sample to a folder named after its source
    wbc = Path(sys.executable).with_name("wbc-edge")
    cmd = [str(wbc), "run", str(inbox), "--watch", "--model", str(args.model)]
    cmd += ["--out", str(results), "--no-live", *shlex.split(args.run_args)]
    load_before = load_average()
    log = (args.work / "run.log").open("w")
    # A job started in the background of a script inherits SIGINT ignored; the run must see it.
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stop = threading.Event()
    feeder = threading.Thread(
        target=feed, args=(sources, inbox, args.images, args.rate, stop), daemon=True
    )
    samples: list[dict] = []
    t0 = time.monotonic()
    try:
        feeder.start()
        done = 0
        while done < args.images:
            time.sleep(max(0.0, t0 + len(samples) + 1 - time.monotonic()))
            if proc.poll() is not None:
                raise SystemExit(f"the run ended early (exit {proc.returncode}): see {log.name}")
            done = count_lines(sample / "done.txt")
            rss = rss_mb(proc.pid)
            if rss is not None:
                samples.append(
                    {
                        "t": round(time.monotonic() - t0, 2),
                        "rss_mb": round(rss, 1),
                        "done": done,
                        "load_1m": load_average(),
                    }
                )
            print(f"{samples[-1]}", flush=True)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        log.close()

    # Warm-up is the first half; after it, memory must not follow the image count.
    half = [s for s in samples if s["done"] >= args.images / 2]
    slope = None
    if len(half) >= 3 and half[-1]["done"] > half[0]["done"]:
        x = np.array([s["done"] for s in half], float)
        y = np.array([s["rss_mb"] for s in half], float)
        slope = float(np.polyfit(x, y, 1)[0] * 1000.0)
    rss = [s["rss_mb"] for s in samples]
    summary = json.loads((sample / "summary.json").read_text())
    record = {
        "name": args.name,
        "date": utc_date(),
        "command": shlex.join(
            [
                sys.executable,
                "benchmarks/studies/soak_watch.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),  # fmt: skip
        "run_command": shlex.join(cmd),
        "machine": machine_info(),
        "images": args.images,
        "rate_per_s": args.rate,
        "seconds": samples[-1]["t"] if samples else None,
        "rss_mb": {
            "first": rss[0] if rss else None,
            "peak": max(rss) if rss else None,
            "last": rss[-1] if rss else None,
            "median_second_half": float(np.median([s["rss_mb"] for s in half])) if half else None,
        },
        "slope_mb_per_1000_images_second_half": slope,
        "load_avg_1m": [load_before, load_average()],
        "run_summary": {k: v for k, v in summary.items() if k != "differential"},
        "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    title = (
        f"wbc-edge run --watch: {args.images} images at {args.rate:g}/s; RSS peak "
        f"{record['rss_mb']['peak']} MB, second-half slope "
        f"{slope if slope is None else round(slope, 2)} MB per 1000 images"
    )
    plot(samples, args.out / f"{args.name}.png", title)
    print(json.dumps({k: v for k, v in record.items() if k not in ("samples", "machine")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
