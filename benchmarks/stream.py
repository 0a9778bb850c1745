"""``wbc-edge bench --stream SOURCE``: ``run`` end to end, with the decode limit measured beside it.

The end-to-end figure is the real pipeline (:class:`~wbc_edge.runtime.pipeline.Pipeline`: the
same source, decode workers, batching, backend, cell archive and record writer as
``wbc-edge run``) writing into a scratch sample folder. Beside it, the **decode limit**: the
same files read and decoded by the same function at the same scale
(:func:`~wbc_edge.model.decode.decode_image` with the pipeline's own ``min_side``) on the same
number of worker threads, and nothing else. No run of
these files can be faster than that on this machine, so ``limit / end-to-end`` says how much of
the rest (preprocessing, the model, writing) is left to win. A second limit adds the card's
preprocessing (decode + resize + normalise): what the image work alone costs.

On a shared machine the two rates are measured one after the other under whatever load there
is, so their ratio swings with it. ``cpu_ratio`` compares what each costs instead: the run's
process CPU per item over the decode limit's CPU per image, the same files on the same threads.
It barely moves with the load, and on free cores it is the ratio the rates would show.

Latency is per item, from the moment it was read from disk (or grabbed from the video) to the
moment its record was written.

The **serial roof** puts the two stages nothing can remove side by side: ``1 / (1 / decode
limit + 1 / inference rate)``, the inference rate being the same backend on the same crops at
batch 32, measured in the same bench run. A pipeline that overlapped nothing and spent no CPU
anywhere else would reach it; ``roof_ratio`` is the run's items/s over it. Beside it, the CPU
each cell costs *outside* decode and inference (the process's CPU per cell less those two
stages' thread CPU), which is what the pipeline itself adds and what a Jetson's slower cores
would pay again.

**INT8 or FP32 on this CPU**: an ONNX model's other export beside it (``x.onnx`` for
``x.int8-cpu.onnx`` and the other way round) is timed the same way at batch 32, and the report
says which is faster here and what the CPU offers for 8-bit arithmetic (AVX-512 VNNI or AVX-VNNI
on x86, the dot-product extension on ARM): without VNNI, ONNX Runtime's INT8 kernels on AVX2
gain little or nothing over FP32 (and saturate: ``records.saturates_u8s8``).
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.model.defaults import DEVICE, THREADS
from wbc_edge.records import load_average, markdown_table, utc_date


@dataclass
class StreamConfig:
    model: Path
    source: str
    smear: bool = False
    realtime: bool = False
    batch: int | None = None  # None: the pipeline's default, as in `run`
    workers: int | None = None
    threads: int = THREADS  # ONNX Runtime intra-op threads (0: half the cores)
    device: str = DEVICE
    limit: int = 0  # at most this many files or frames (0: all)
    fps: float = 0.0  # --realtime: pace a video at this rate (0: its own)
    # Where the run's records and cell images go for the measurement (deleted after): the
    # results folder's own disk, as `run --out` writes there (None: the system's temp folder).
    # Writing a cell's file cost 0.07-0.75 ms of CPU on this project's machines, by folder and by
    # the moment: the archive's cost is the disk's, so it is measured on the disk `run` uses.
    work_dir: Path | None = None
    infer_s: float = 1.5  # seconds of timed calls for the inference rate (tests: less)


def backend_is_cpu(backend: Any) -> bool:
    """An ONNX Runtime session on the CPU alone (the only case where INT8 and FP32 exports
    compete on this machine's cores)."""
    return getattr(backend, "providers", None) == ["CPUExecutionProvider"]


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p50, p95, p99 = np.percentile(np.asarray(values) * 1000.0, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": max(values) * 1000.0}


def _files(source: str, limit: int) -> list[Path] | None:
    """The files a folder/glob/image source reads (as `run` orders them), or None for a video."""
    from wbc_edge.runtime.sources import list_files, parse_uri

    opts = parse_uri(source)
    if opts.kind == "video":
        return None
    if opts.kind not in ("folder", "glob", "image"):
        raise UserError(
            f"bench --stream {source}: give a folder, glob, image or video file "
            f"(a {opts.kind} source has no decode limit to measure)"
        )
    files = list_files(opts)
    return files[:limit] if limit else files


def decode_limit(
    files: list[Path], model: Any, workers: int, preprocess: bool = False, field: bool = False
) -> dict[str, Any]:
    """Images/s reading and decoding ``files`` on ``workers`` threads as ``model`` decodes them
    for the pipeline (a ``field`` in full), and preprocessing them too with ``preprocess``
    (the card's resize + normalise)."""
    from wbc_edge.runtime.pool import END, OrderedPool

    def work(path: Path) -> int:
        image, _ = model.decode(path.read_bytes(), str(path), field)
        if preprocess:
            model.prepare([image])
        return image.shape[0]

    errors = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with OrderedPool(work, workers, name="wbc-limit") as pool:
        for path in files:
            while not pool.submit(path, timeout=0):  # full: collect the oldest first
                errors += pool.next().error is not None
        pool.end()
        while (done := pool.next()) is not END:
            errors += done.error is not None
    seconds = time.perf_counter() - t0
    return {
        "images": len(files),
        "errors": errors,
        "seconds": round(seconds, 4),
        "images_per_s": round(len(files) / seconds, 1) if seconds > 0 else 0.0,
        "cpu_ms_per_image": round(1000 * (time.process_time() - c0) / max(1, len(files)), 4),
    }


def video_decode_limit(path: str, limit: int) -> dict[str, Any]:
    """Frames/s grabbing and decoding a video file with OpenCV, unpaced (one thread: a video
    decodes in order)."""
    import cv2

    cap = cv2.VideoCapture(path)
    frames = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while not limit or frames < limit:
        ok, _ = cap.read()
        if not ok:
            break
        frames += 1
    seconds = time.perf_counter() - t0
    cap.release()
    return {
        "images": frames,
        "errors": 0,
        "seconds": round(seconds, 4),
        "images_per_s": round(frames / seconds, 1) if seconds > 0 else 0.0,
        "cpu_ms_per_image": round(1000 * (time.process_time() - c0) / max(1, frames), 4),
    }


INFER_BATCH = 32  # the batch of the inference rate in the serial roof


def int8_cpu_support(cpuinfo: str | None = None) -> str:
    """What this CPU offers ONNX Runtime's INT8 kernels, in words (``records.cpu_flags``)."""
    from wbc_edge.records import VNNI_FLAGS, cpu_flags, saturates_u8s8

    flags = cpu_flags(cpuinfo)
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI (8-bit dot products in one instruction)"
    if flags & VNNI_FLAGS:
        return "AVX-VNNI (8-bit dot products in one instruction)"
    if "asimddp" in flags:
        return "ARM dot product (SDOT/UDOT)" + (" and I8MM" if "i8mm" in flags else "")
    if saturates_u8s8(flags):
        return (
            "AVX2 without VNNI (8-bit products added in 16 bits: little gain over FP32, and "
            "saturation: export-int8-cpu.md)"
        )
    return "no 8-bit dot-product instructions found" if flags else "unknown (no CPU flags)"


def infer_rate(model: Any, x: np.ndarray, min_s: float = 1.5) -> dict[str, Any]:
    """Images/s and CPU ms per image of ``model.infer`` on the batch ``x``, nothing else
    (two calls to warm up, then calls until ``min_s`` seconds and at least five calls)."""
    for _ in range(2):
        model.infer(x)
    calls, t0, c0 = 0, time.perf_counter(), time.process_time()
    while calls < 5 or time.perf_counter() - t0 < min_s:
        model.infer(x)
        calls += 1
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    images = calls * len(x)
    return {
        "batch": len(x),
        "calls": calls,
        "images_per_s": round(images / seconds, 1),
        "ms_per_image": round(1000 * seconds / images, 4),
        "cpu_ms_per_image": round(1000 * cpu / images, 4),
    }


def other_export(model: Path) -> tuple[Path, str, str] | None:
    """The same model's other CPU export beside it, if there: (path, its precision, this one's)."""
    name = model.name
    if model.suffix != ".onnx":
        return None
    if ".int8-" in name:
        other = model.with_name(name.split(".int8-")[0] + ".onnx")
        return (other, "fp32", "int8") if other.is_file() else None
    other = model.with_name(model.stem + ".int8-cpu.onnx")
    return (other, "int8", "fp32") if other.is_file() else None


def _sample_batch(files: list[Path] | None, model: Any) -> np.ndarray:
    """:data:`INFER_BATCH` of the run's own crops, preprocessed (random pixels for a video)."""
    images = []
    for path in (files or [])[: 4 * INFER_BATCH]:
        try:
            images.append(model.decode(path.read_bytes(), str(path))[0])
        except ValueError:
            continue
        if len(images) == INFER_BATCH:
            break
    if not images:
        rng = np.random.default_rng(0)
        size = model.card.preprocess.input_size
        images = [rng.integers(0, 256, (size, size, 3), np.uint8)]
    images = (images * INFER_BATCH)[:INFER_BATCH]
    return model.prepare(images)


def run_stream_bench(cfg: StreamConfig, command: str = "") -> dict[str, Any]:
    """Measure ``cfg.source`` through the pipeline and its decode limit; the report dict."""
    from wbc_edge.benchmarks.machine import machine_info
    from wbc_edge.data.scan import sha256_file
    from wbc_edge.model.model import Model
    from wbc_edge.runtime.archive import CellArchive, crop_px_for
    from wbc_edge.runtime.pipeline import Pipeline, PipelineConfig
    from wbc_edge.runtime.sample import SampleFolder
    from wbc_edge.runtime.sinks import RunOutput
    from wbc_edge.runtime.sources import open_source

    files = _files(cfg.source, cfg.limit)
    if files is not None and not files:
        raise UserError(f"bench --stream {cfg.source}: no files to read")
    if files is not None:
        for path in files:  # the page cache holds them for both passes alike
            path.read_bytes()
    defaults = PipelineConfig()
    config = PipelineConfig(
        mode="smear" if cfg.smear else "crops",
        batch=cfg.batch or defaults.batch,
        workers=cfg.workers if cfg.workers is not None else defaults.workers,
        max_items=cfg.limit,
    )
    load_before = load_average()
    with Model.load(cfg.model, device=cfg.device, threads=cfg.threads) as model:
        options: dict[str, Any] = {"fps": cfg.fps} if cfg.fps else {}
        source = open_source(cfg.source, realtime=cfg.realtime, **options)
        with (
            tempfile.TemporaryDirectory(prefix="wbc-edge-stream-", dir=cfg.work_dir) as tmp,
            source,
            RunOutput(Path(tmp) / "out") as output,
        ):
            # The cells' images are kept as `run` keeps them: part of every cell's cost.
            archive = CellArchive(
                SampleFolder(Path(tmp) / "out"),
                crop_px_for(model.card.preprocess.input_size),
                cfg.smear,
            )
            pipeline = Pipeline(source, model, output, config, archive=archive)
            cpu0 = time.process_time()
            stats = pipeline.run()
            cpu_s = time.process_time() - cpu0
            elapsed = time.perf_counter() - stats.started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        # Crops mode: the run's own crops; a smear run's cells are crops of fields, so the
        # rate is taken on the card's input size alone (the network's cost does not depend on
        # the pixels).
        x = _sample_batch(None if cfg.smear else files, model)
        rates = {"model": infer_rate(model, x, cfg.infer_s)}
        precision = "fp32"
        other = other_export(cfg.model) if backend_is_cpu(model.backend) else None
        if other is not None:
            with Model.load(other[0], device=cfg.device, threads=cfg.threads) as second:
                rates["other"] = infer_rate(second, x, cfg.infer_s)
            rates["other"]["path"], precision = str(other[0]), other[2]
            rates["other"]["precision"] = other[1]
        elif ".int8-" in cfg.model.name:
            precision = "int8"
        rates["model"]["precision"] = precision
        card = model.card
        backend_name = model.name
        min_side = 0 if cfg.smear else model.min_side
    # The limits once the session is closed, as before the model core: its idle thread pool
    # must not share the cores with them. Decoding and preprocessing need only the card, which
    # the closed Model keeps.
    if files is not None:
        limit = decode_limit(files, model, stats.workers, field=cfg.smear)
        image_limit = (
            None if cfg.smear else decode_limit(files, model, stats.workers, preprocess=True)
        )
    else:
        limit, image_limit = video_decode_limit(cfg.source, cfg.limit), None
    load_after = load_average()

    items_per_s = stats.items / elapsed if elapsed > 0 else 0.0
    cells_per_s = stats.cells / elapsed if elapsed > 0 else 0.0
    rate = rates["model"]["images_per_s"]
    roof = 1.0 / (1.0 / limit["images_per_s"] + 1.0 / rate) if limit["images_per_s"] else 0.0
    summary = stats.stage_summary()
    cpu_per_cell = 1000 * cpu_s / max(1, stats.cells)
    needed = summary["decode"]["cpu_ms_per_cell"] + summary["infer"]["cpu_ms_per_cell"]
    int8 = {"cpu_support": int8_cpu_support(), **rates}
    if "other" in rates:
        faster = max(rates.values(), key=lambda r: r["images_per_s"])
        int8["faster"] = faster["precision"]
    return {
        "kind": "stream",
        "date": utc_date(),
        "command": command,
        "machine": machine_info(),
        "load_avg_1m": [load_before, load_after],
        "model": str(cfg.model),
        "backend": backend_name,
        "architecture": card.architecture,
        "input_size": card.preprocess.input_size,
        # What decides the per-cell work besides the network: which card a row measured.
        "interpolation": card.preprocess.interpolation,
        "ood_method": card.ood.method if card.ood is not None else None,
        "model_sha256": sha256_file(cfg.model),
        "source": cfg.source,
        "mode": config.mode,
        "realtime": cfg.realtime,
        "batch": config.batch,
        "workers": stats.workers,
        "min_side": min_side,
        "items": stats.items,
        "cells": stats.cells,
        "errors": stats.errors,
        "dropped": stats.dropped,
        "seconds": round(elapsed, 3),
        "items_per_s": round(items_per_s, 1),
        "cells_per_s": round(cells_per_s, 1),
        "latency_ms": {k: round(v, 2) for k, v in _percentiles(list(stats.latencies)).items()},
        "process_cpu_ms_per_item": round(1000 * cpu_s / max(1, stats.items), 4),
        "stages": summary,
        "cpu_ms_per_cell": round(cpu_per_cell, 4),
        # Process CPU per cell less decode and inference: what the pipeline itself costs.
        "cpu_ms_per_cell_outside_decode_infer": round(cpu_per_cell - needed, 4),
        "infer_rate": rates["model"],
        "serial_roof_items_per_s": round(roof, 1),
        "roof_ratio": round(items_per_s / roof, 3) if roof else None,
        "int8_vs_fp32": int8,
        "decode_limit": limit,
        "decode_preprocess_limit": image_limit,
        "limit_ratio": round(limit["images_per_s"] / items_per_s, 2) if items_per_s else None,
        "cpu_ratio": round(1000 * cpu_s / max(1, stats.items) / limit["cpu_ms_per_image"], 2)
        if limit["cpu_ms_per_image"]
        else None,
        "peak_rss_mb": round(peak_rss_mb, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    """The stream report as a short markdown page (the JSON beside it holds every figure)."""
    from wbc_edge.benchmarks.machine import describe

    r = report
    lat = r["latency_ms"]
    lim = r["decode_limit"]
    rows = [
        [
            "items / cells",
            f"{r['items']} / {r['cells']} ({r['errors']} errors, {r['dropped']} dropped)",
        ],
        ["end to end", f"{r['items_per_s']:.1f} items/s, **{r['cells_per_s']:.1f} cells/s**"],
        [
            "latency read -> record (ms)",
            f"p50 {lat['p50']:.1f}, p95 {lat['p95']:.1f}, p99 {lat['p99']:.1f}, "
            f"max {lat['max']:.1f}",
        ],
        [
            f"decode limit (same files, same decode, {r['workers']} workers)",
            f"{lim['images_per_s']:.1f} images/s ({lim['cpu_ms_per_image']:.3f} CPU ms each)",
        ],
    ]
    pre = r.get("decode_preprocess_limit")
    if pre:
        rows.append(
            [
                "decode + preprocess limit",
                f"{pre['images_per_s']:.1f} images/s ({pre['cpu_ms_per_image']:.3f} CPU ms each)",
            ]
        )
    inf = r.get("infer_rate")
    if inf:
        rows += [
            [
                f"inference alone, batch {inf['batch']} ({inf.get('precision', '?')})",
                f"{inf['images_per_s']:.1f} images/s ({inf['cpu_ms_per_image']:.3f} CPU ms each)",
            ],
            [
                "serial roof: 1 / (1/decode limit + 1/inference)",
                f"{r['serial_roof_items_per_s']:.1f} items/s; **end to end {r['roof_ratio']:.2f} "
                "of it**",
            ],
            [
                "CPU per cell outside decode and inference",
                f"**{r['cpu_ms_per_cell_outside_decode_infer']:.3f} ms** (process "
                f"{r['cpu_ms_per_cell']:.3f} ms per cell)",
            ],
        ]
    q = r.get("int8_vs_fp32")
    if q:
        text = f"CPU: {q['cpu_support']}"
        if "other" in q:
            a, b = q["model"], q["other"]
            text += (
                f"; {a['precision'].upper()} {a['ms_per_image']:.3f} ms/image against "
                f"{b['precision'].upper()} {b['ms_per_image']:.3f} at batch {a['batch']}: "
                f"**{q['faster'].upper()} is faster here**"
            )
        rows.append(["INT8 or FP32 on this CPU", text])
    rows += [
        ["limit / end to end", f"{r['limit_ratio']}x (CPU per item: {r['cpu_ratio']}x)"],
        ["process CPU per item", f"{r['process_cpu_ms_per_item']:.3f} ms"],
        ["peak RSS", f"{r['peak_rss_mb']:.0f} MB"],
        ["load average (1 min) before / after", f"{r['load_avg_1m'][0]} / {r['load_avg_1m'][1]}"],
    ]
    stages = [
        [name, f"{v['ms_per_cell']:.3f}", f"{v['cpu_ms_per_cell']:.3f}", f"{v['wall_s']:.3f}"]
        for name, v in r["stages"].items()
    ]
    head = [
        f"# wbc-edge bench --stream `{r['source']}`",
        "",
        f"- model `{Path(r['model']).name}` ({r['architecture']}, {r['input_size']} px) on "
        f"{r['backend']}; mode {r['mode']}{', realtime' if r['realtime'] else ''}; batch "
        f"{r['batch']}; decode min side {r['min_side']} px (0: full decode)",
        f"- {r['date']}; `{r['command']}`",
        *[f"- {line}" for line in describe(r["machine"])],
        "",
    ]
    note = [
        "",
        "Stage times add up over items; workers run decode, find and preprocess in parallel "
        "with inference, so the wall figures overlap and do not sum to the run's time.",
        "",
    ]
    tables = [
        markdown_table(["what", "value"], rows),
        "",
        markdown_table(["stage", "ms per cell (wall)", "CPU ms per cell", "total wall s"], stages),
    ]
    return "\n".join(head + tables + note)


def print_report(report: dict[str, Any]) -> None:
    from wbc_edge.console import console

    console.print(markdown(report), highlight=False, soft_wrap=True)
