"""Reliability probes: ``wbc-edge run`` driven as an adversarial user would, in real processes.

A probe harness, not the product: it lives in ``benchmarks/studies/`` (outside the wheel) and
runs from a checkout: ``python benchmarks/studies/reliability.py --crops ../shared/data/pbc9``.
The tests (``tests/test_reliability*.py``, ``tests/test_nothing_lost.py``,
``test_bad_input_refused.py``, ``test_review_token.py``) and the recorded results
(``benchmarks/results/reliability.*``, written by :func:`main`) check the same behaviour. Every
probe runs the real CLI in a subprocess: ``kill -9`` at a random moment, SIGTERM and SIGINT, two
runs on one results folder, files vanishing and coming back, a full disk (a small tmpfs, when
run as root), the review page spoken to in malformed HTTP. Records name paths relative to the
repository, and scratch paths as ``WORK``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wbc_edge.records import load_average, markdown_table, utc_date, write_record

# A child inherits an ignored SIGINT when its parent was started in the background; restore
# what a terminal's foreground job has, so SIGINT means Ctrl-C in every probe.
_BOOT = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from wbc_edge.cli import main; main()"
)


def wbc_edge(*args: str) -> list[str]:
    """The command line that runs ``wbc-edge ARGS`` with this interpreter."""
    return [sys.executable, "-c", _BOOT, *args]


def complete_lines(path: Path) -> int:
    """Lines a reader can use (a torn last line, left by a kill, does not count)."""
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def record_keys(out: Path) -> list[str]:
    """The item key of every record in ``out/cells.jsonl`` (one record per item for crops)."""
    path = out / "cells.jsonl"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["key"] for line in f if line.endswith("\n")]


def wait_for(condition: Callable[[], bool], timeout: float, proc: Any = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(0.01)
    return False


class Run:
    """``wbc-edge run ...`` in a child process; stderr goes to a file (a pipe could fill)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._err = log.open("ab")
        self.proc = subprocess.Popen(wbc_edge(*args), stdout=subprocess.DEVNULL, stderr=self._err)

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9
        finally:
            self._err.close()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def kill_cycles(
    args: list[str],
    out: Path,
    expected: Callable[[], set[str]],
    cycles: int = 3,
    step: int = 5,
    before_each: Callable[[int], None] | None = None,
    endless: bool = False,
    timeout: float = 90,
) -> dict[str, Any]:
    """``kill -9`` a run ``cycles`` times, each time after ``step`` more records, then let one
    run finish (an ``endless`` one, ``--watch``, gets SIGTERM once it has everything) and count
    what was lost or repeated. ``expected`` gives the keys that must each be there once."""
    jsonl = out / "cells.jsonl"
    log = out.parent / f"{out.name}-kill.log"
    mid_run = 0
    for cycle in range(cycles):
        if before_each is not None:
            before_each(cycle)
        start = complete_lines(jsonl)
        run = Run(args, log)
        wait_for(lambda s=start: complete_lines(jsonl) >= s + step, timeout, run.proc)
        mid_run += run.proc.poll() is None
        run.signal(signal.SIGKILL)
        run.wait()
    if before_each is not None:
        before_each(cycles)
    run = Run(args, log)
    if endless:
        wait_for(lambda: set(record_keys(out)) >= expected(), timeout, run.proc)
        run.signal(signal.SIGTERM)
    code = run.wait(timeout)
    keys = record_keys(out)
    want = expected()
    return {
        "cycles": cycles,
        "killed_mid_run": mid_run,
        "expected": len(want),
        "records": len(keys),
        "lost": len(want - set(keys)),
        "repeated": len(keys) - len(set(keys)),
        "unexpected": len(set(keys) - want),
        "final_exit": code,
    }


def stop_with(
    signum: int, args: list[str], out: Path, after: int = 5, timeout: float = 60
) -> dict[str, Any]:
    """Send ``signum`` once ``after`` records are written; what the run leaves behind."""
    log = out.parent / f"{out.name}-{signal.Signals(signum).name}.log"
    run = Run(args, log)
    wait_for(lambda: complete_lines(out / "cells.jsonl") >= after, timeout, run.proc)
    still_running = run.proc.poll() is None
    run.signal(signum)
    code = run.wait(timeout)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    keys = record_keys(out)
    return {
        "signal": signal.Signals(signum).name,
        "sent_mid_run": still_running,
        "exit": code,
        "summary_written": bool(summary),
        "summary_items": summary.get("items"),
        "records": len(keys),
        "repeated": len(keys) - len(set(keys)),
        "stderr": run.stderr(),
    }


def concurrent_runs(
    first_args: list[str], args: list[str], out: Path, timeout: float = 60
) -> dict[str, Any]:
    """A second run on a results folder in use (by a ``--watch`` service: it never ends on its
    own), then ``kill -9`` of the first and a third run: the lock the kernel dropped with the
    killed process must not block it."""
    first = Run(first_args, out.parent / f"{out.name}-first.log")
    wait_for(lambda: complete_lines(out / "cells.jsonl") >= 2, timeout, first.proc)
    second = subprocess.run(wbc_edge(*args), capture_output=True, text=True, timeout=timeout)
    first_alive = first.proc.poll() is None
    first.signal(signal.SIGKILL)
    first.wait()
    third = subprocess.run(wbc_edge(*args), capture_output=True, text=True, timeout=timeout)
    keys = record_keys(out)
    return {
        "first_running_when_second_started": first_alive,
        "second_exit": second.returncode,
        "second_stderr": second.stderr.strip(),
        "third_exit": third.returncode,
        "third_recovered_lock": "recovered" in third.stderr,
        "records": len(keys),
        "repeated": len(keys) - len(set(keys)),
    }


def file_keys(folder: Path) -> set[str]:
    """Keys the results must hold for every file of a folder (as the runtime names them)."""
    from wbc_edge.runtime.resume import file_key

    return {file_key(p) for p in folder.rglob("*") if p.is_file()}


def video_keys(video: Path, frames: int) -> set[str]:
    from wbc_edge.runtime.resume import video_key

    return {video_key(video, i) for i in range(frames)}


def peak_rss_mb(args: list[str], timeout: float = 120) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of one ``wbc-edge`` call."""
    proc = subprocess.Popen(wbc_edge(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.02)


# -- the recorded probe set ------------------------------------------------------------------


def _copy_crops(source: Path, dest: Path, n: int, prefix: str = "c") -> list[Path]:
    import shutil

    crops = sorted(p for p in source.rglob("*.jpg"))[:n]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, crop in enumerate(crops):
        target = dest / f"{prefix}{i:05d}.jpg"
        shutil.copyfile(crop, target)
        out.append(target)
    return out


def _bad_files(folder: Path, good: Path) -> dict[str, str]:
    """Write every kind of bad file into ``folder``; name -> what it is."""
    import struct
    import zlib

    import cv2
    import numpy as np

    data = good.read_bytes()
    mid = len(data) // 2
    noise = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", 16000, 16000, 8, 2, 0, 0, 0)
    )
    bomb += chunk(b"IDAT", zlib.compress(b"\0" * 16001 * 64)) + chunk(b"IEND", b"")
    bmp = cv2.imencode(".bmp", image)[1].tobytes()
    files = {
        "corrupt-middle.jpg": (data[:mid] + noise + data[mid + 300 :], "corrupt JPEG, end intact"),
        "truncated.jpg": (data[: len(data) // 2], "truncated JPEG"),
        "one-pixel.png": (cv2.imencode(".png", image[:1, :1])[1].tobytes(), "1x1 image"),
        "grey.png": (
            cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[1].tobytes(),
            "grayscale",
        ),
        "blank.png": (cv2.imencode(".png", np.full_like(image, 200))[1].tobytes(), "blank frame"),
        "saturated.png": (cv2.imencode(".png", np.full_like(image, 255))[1].tobytes(), "saturated"),
        "bomb.png": (bomb, "16000x16000 PNG header"),
        "half.bmp": (bmp[: len(bmp) // 2], "BMP cut in half"),
        "notes.txt": (b"not an image", "text file"),
        "empty.jpg": (b"", "empty file"),
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    return {name: what for name, (_, what) in files.items()}


def _card_variant(model: Path, dest: Path, **changes: Any) -> Path:
    """A copy of an ONNX model whose card is changed (a fault the load must catch)."""
    import onnx

    from wbc_edge.model.card import ONNX_METADATA_KEY

    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    card = json.loads(props[ONNX_METADATA_KEY])
    if "class_names" in changes and isinstance(card.get("roles"), dict):  # renamed classes
        renamed = dict(zip(card["class_names"], changes["class_names"], strict=False))
        card["roles"] = {renamed.get(k, k): v for k, v in card["roles"].items()}
    for key, value in changes.items():
        if key in card.get("preprocess", {}):
            card["preprocess"][key] = value
        else:
            card[key] = value
    props[ONNX_METADATA_KEY] = json.dumps(card)
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dest))
    return dest


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_watch_cpu(args: list[str], out: Path, files: int, seconds: float, block: bool) -> float:
    """Share of one core a ``--watch`` run uses once every file is done (``block``: without
    watchdog, i.e. the polling fallback)."""
    boot = "import sys; sys.modules['watchdog'] = None; " if block else ""
    log = out.parent / f"{out.name}-idle.log"
    err = log.open("ab")
    cmd = [sys.executable, "-c", boot + _BOOT, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: complete_lines(out / "done.txt") >= files, 600, proc)
        time.sleep(2.0)
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        return (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        err.close()


def _usage_probe(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(wbc_edge(*argv), capture_output=True, text=True, timeout=120)
    err = done.stderr
    return {
        "argv": " ".join(argv),
        "exit": done.returncode,
        "usage_line": "Usage: wbc-edge" in err,
        "traceback": "Traceback" in err,
        "first_error_line": next((ln for ln in err.splitlines() if "rror" in ln), ""),
    }


def probe_all(model: Path, crops: Path, work: Path) -> dict[str, Any]:  # noqa: C901
    """Every probe of issues 15 and 32, on ``model`` and real cell crops from ``crops``."""
    import cv2

    from wbc_edge.benchmarks.studies.stream_server import MjpegServer, silent_server

    rows: list[dict[str, Any]] = []

    def row(probe: str, expected: str, observed: str, ok: bool, **counts: Any) -> None:
        rows.append(
            {"probe": probe, "expected": expected, "observed": observed, "ok": ok, **counts}
        )

    def args(src: Any, out: Path, *extra: str) -> list[str]:
        """Results in ``out`` itself: the sample folder (``--out`` is its parent)."""
        where = ["--out", str(out.parent), "--sample", out.name]
        return ["run", str(src), "--model", str(model), *where, "--no-live", *extra]

    # 1, 5, 6: bad files among good ones ------------------------------------------------------
    folder = work / "bad"
    good = _copy_crops(crops, folder, 20)
    odd = os.fsencode(folder) + b"/odd-\xff-name.jpg"
    os.rename(good[-1], odd)
    kinds = _bad_files(folder, good[0])
    out = work / "bad-out"
    code, rss = peak_rss_mb(args(folder, out))
    errors = {
        Path(e["key"]).name: e["error"] for e in map(json.loads, (out / "errors.jsonl").open())
    }
    keys = record_keys(out)
    # A note beside the images is skipped unread (a folder run says so), not an error record.
    skipped = {n for n in kinds if n.endswith(".txt")}
    recorded = {Path(k).name for k in keys}
    handled = sum(n in errors for n in kinds if n not in skipped)
    handled += sum(n not in errors and n not in recorded for n in skipped)
    summary = json.loads((out / "summary.json").read_text())
    counted = summary["cells"]  # the sample's records, counted or in review
    rerun = subprocess.run(wbc_edge(*args(folder, out)), capture_output=True, timeout=120)
    row(
        "bad files among 20 good crops (one with a non-UTF-8 name)",
        "exit 0; every bad image an error record with its reason, the text file skipped unread; "
        "20 cells; rerun exit 0, adds none",
        f"exit {code}, {handled}/{len(kinds)} bad files in errors.jsonl, {len(keys)} records "
        f"({counted} cells counted or in review), rerun exit {rerun.returncode} and "
        f"{len(record_keys(out)) - len(keys)} added; peak RSS {rss:.0f} MB "
        "with the 16000x16000 PNG among them",
        code == 0
        and handled == len(kinds)
        and len(keys) == 20 == counted
        and rerun.returncode == 0
        and len(record_keys(out)) == 20,
        bad_files_tried=len(kinds),
        bad_files_handled=handled,
        peak_rss_mb=round(rss),
        reasons={n: errors.get(n, "skipped, not read" if n in skipped else "") for n in kinds},
    )
    name_ok = any(os.fsencode(k) == odd for k in keys)
    csv_ok = "odd-\\xff-name.jpg" in (out / "cells.csv").read_bytes().decode("utf-8")
    row(
        "non-UTF-8 file name",
        "classified; JSON key gives back the exact bytes; CSV valid UTF-8 with \\xff",
        f"recorded {name_ok}, CSV shows \\xff {csv_ok}",
        name_ok and csv_ok,
    )

    # 8: card faults fail the run at load ----------------------------------------------------
    for label, changes in (
        ("card std = 0", {"std": [0.0, 0.5, 0.5]}),
        ("card input size 0", {"input_size": 0}),
        ("card lists one class too many", {"class_names": None}),
    ):
        if changes.get("class_names", 1) is None:
            from wbc_edge.model.model import Model

            with Model.load(model) as b:
                changes = {"class_names": [*b.card.class_names, "Extra"]}
        bad_model = _card_variant(model, work / "variant.onnx", **changes)
        vout = work / f"variant-out-{len(rows)}"
        done = subprocess.run(
            wbc_edge(*args(folder, vout, "--model", str(bad_model))),
            capture_output=True,
            text=True,
            timeout=120,
        )
        written = record_keys(vout)
        errs = complete_lines(vout / "errors.jsonl")
        row(
            label,
            "exit 2 at load with one line; no record or error written",
            f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1][:240]}; "
            f"{len(written)} records, {errs} errors",
            done.returncode == 2 and not written and not errs,
        )

    # 2: concurrent runs and a stale lock ----------------------------------------------------
    many = work / "many"
    files = _copy_crops(crops, many, 300)
    cout = work / "concurrent-out"
    result = concurrent_runs(
        [*args(many, cout), "--watch"], [*args(many, cout), "--batch", "1"], cout
    )
    row(
        "second run on a folder in use; then kill -9 of the first and a third run",
        "second refused (exit 2, names the holder); third runs (lock recovered); no repeats",
        f"second exit {result['second_exit']} ({result['second_stderr'][:90]}...); third exit "
        f"{result['third_exit']}, lock recovered {result['third_recovered_lock']}; "
        f"{result['records']} records, {result['repeated']} repeated",
        result["second_exit"] == 2
        and result["third_exit"] == 0
        and result["repeated"] == 0
        and result["records"] == len(files),
        concurrent_runs=2,
    )

    # 3: SIGTERM and SIGINT ------------------------------------------------------------------
    for signum in (signal.SIGTERM, signal.SIGINT):
        sout = work / f"stop-{signum}"
        report = work / f"report-{signum}.html"
        result = stop_with(
            signum, [*args(many, sout, "--batch", "1"), "--report", str(report)], sout, after=20
        )
        row(
            f"{result['signal']} mid-run (folder of 300)",
            "drains: exit 0, summary.json and the report written, items = records",
            f"sent mid-run {result['sent_mid_run']}, exit {result['exit']}, summary "
            f"{result['summary_written']} ({result['summary_items']} items), {result['records']} "
            f"records, report {report.is_file()}",
            result["exit"] == 0
            and result["summary_written"]
            and report.is_file()
            and result["summary_items"] == result["records"],
        )

    # 4: --report into a folder --------------------------------------------------------------
    rdir = work / "reports"
    rdir.mkdir(exist_ok=True)
    done = subprocess.run(
        wbc_edge(*args(folder, work / "report-out"), "--report", str(rdir)),
        capture_output=True,
        timeout=120,
    )
    leftovers = [p.name for p in work.glob("reports*.tmp")] + [p.name for p in rdir.glob("*.tmp")]
    row(
        "--report DIR (an existing folder)",
        "exit 0, DIR/report.html, no DIR.tmp",
        f"exit {done.returncode}, report.html {(rdir / 'report.html').is_file()}, "
        f"leftovers {leftovers}",
        done.returncode == 0 and (rdir / "report.html").is_file() and not leftovers,
    )

    # kill -9 cycles: folder, watched folder, video -----------------------------------------
    kout = work / "kill-folder"
    result = kill_cycles(
        [*args(many, kout), "--batch", "1"], kout, lambda: file_keys(many), step=20
    )
    rows_kill = [("folder of 300 crops", result)]
    inbox = work / "inbox"
    inbox.mkdir()
    pool = sorted(many.glob("*.jpg"))

    def arrive(cycle: int) -> None:
        import shutil

        for i, src in enumerate(pool[cycle * 40 : (cycle + 1) * 40]):
            shutil.copyfile(src, inbox / f"w{cycle}-{i:03d}.jpg")

    wout = work / "kill-watch"
    watch_args = [*args(inbox, wout), "--batch", "1", "--watch", "--settle", "0.2", "--poll", "0.1"]
    result = kill_cycles(
        watch_args, wout, lambda: file_keys(inbox), step=10, before_each=arrive, endless=True
    )
    rows_kill.append(("watched folder, 40 new crops before each start", result))
    video = work / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 128))
    for src in pool[:200]:
        writer.write(cv2.resize(cv2.imread(str(src)), (128, 128)))
    writer.release()
    vout = work / "kill-video"
    result = kill_cycles(
        [*args(video, vout), "--batch", "1"], vout, lambda: video_keys(video, 200), step=20
    )
    rows_kill.append(("video file, 200 frames", result))
    for label, r in rows_kill:
        row(
            f"kill -9 x{r['cycles']}: {label}",
            "records lost 0, repeated 0; final run exit 0",
            f"killed mid-run {r['killed_mid_run']}/{r['cycles']}; {r['records']} records of "
            f"{r['expected']}; lost {r['lost']}, repeated {r['repeated']}; exit {r['final_exit']}",
            r["lost"] == r["repeated"] == r["unexpected"] == 0 and r["final_exit"] == 0,
            kill_cycles=r["cycles"],
            killed_mid_run=r["killed_mid_run"],
            records_lost=r["lost"],
            records_repeated=r["repeated"],
        )
    again = subprocess.run(wbc_edge(*args(video, vout)), capture_output=True, timeout=120)
    row(
        "the same video run again into the same --out",
        "exit 0, no frame added",
        f"exit {again.returncode}, {len(record_keys(vout)) - 200} frames added",
        again.returncode == 0 and len(record_keys(vout)) == 200,
    )
    start = time.monotonic()
    done = subprocess.run(
        wbc_edge(*args(video, work / "realtime-out"), "--realtime"),
        capture_output=True,
        timeout=120,
    )
    took = time.monotonic() - start
    rt = record_keys(work / "realtime-out")
    row(
        "--realtime on a finite video (200 frames at 25 fps)",
        "ends after the last frame; each frame at most once",
        f"exit {done.returncode} after {took:.1f} s, {len(rt)} records, "
        f"{len(rt) - len(set(rt))} repeated",
        done.returncode == 0 and len(rt) == len(set(rt)) <= 200,
    )

    # 9: --watch: an error is not final, and idle cost ---------------------------------------
    slow_in = work / "slow-inbox"
    slow_in.mkdir()
    sout = work / "slow-out"
    run = Run(
        [*args(slow_in, sout), "--watch", "--settle", "0.2", "--poll", "0.1"], work / "slow.log"
    )
    data = pool[0].read_bytes()
    bmp = cv2.imencode(".bmp", cv2.imread(str(pool[1])))[1].tobytes()
    time.sleep(3)
    (slow_in / "paused.jpg").write_bytes(data[: len(data) // 2])
    (slow_in / "halves.bmp").write_bytes(bmp[: len(bmp) // 2])
    time.sleep(0.2 * 20 + 3)  # longer than 20 x --settle: logged as an error first
    first_errors = complete_lines(sout / "errors.jsonl")
    (slow_in / "paused.jpg").write_bytes(data)
    (slow_in / "halves.bmp").write_bytes(bmp)
    wait_for(lambda: len(record_keys(sout)) >= 2, 30, run.proc)
    run.signal(signal.SIGTERM)
    run.wait()
    row(
        "--watch: JPEG writer pausing > 20x --settle, BMP written in two halves",
        "logged as errors while incomplete, then classified once complete",
        f"{first_errors} error records while incomplete, then {len(record_keys(sout))} records",
        first_errors == 2 and len(record_keys(sout)) == 2,
    )
    big = work / "idle-inbox"
    n_idle = 0
    for copy in range(3):
        for src in sorted(crops.rglob("*.jpg"))[:3600]:
            target = big / src.parent.name / f"{copy}-{src.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, target) if copy == 0 else target.write_bytes(src.read_bytes())
            n_idle += 1
    shares = {}
    for mode, block in (("inotify", False), ("polling", True)):
        iout = work / f"idle-{mode}"
        shares[mode] = idle_watch_cpu([*args(big, iout), "--watch"], iout, n_idle, 20.0, block)
    row(
        f"idle --watch over {n_idle} finished files (20 s after the last)",
        "inotify: near 0% of a core (was 34% with polling every 0.5 s)",
        f"inotify {100 * shares['inotify']:.1f}% of a core, polling fallback "
        f"{100 * shares['polling']:.1f}%",
        shares["inotify"] < 0.02,
        idle_files=n_idle,
        idle_cpu_inotify=round(shares["inotify"], 4),
        idle_cpu_polling=round(shares["polling"], 4),
    )

    # 10: stream loss and the open timeout ---------------------------------------------------
    server = MjpegServer(fps=25).start()
    stream_out = work / "stream-out"
    run = Run(args(server.url, stream_out), work / "stream.log")
    try:
        wait_for(lambda: complete_lines(stream_out / "cells.jsonl") >= 20, 60, run.proc)
        server.stop()
        wait_for(lambda: "lost after frame" in run.stderr(), 60, run.proc)
        time.sleep(2)
        server.start()
        wait_for(lambda: "reconnected after" in run.stderr(), 60, run.proc)
        n = complete_lines(stream_out / "cells.jsonl")
        wait_for(lambda: complete_lines(stream_out / "cells.jsonl") >= n + 20, 60, run.proc)
        run.signal(signal.SIGTERM)
        code = run.wait()
    finally:
        server.stop()
    summary = json.loads((stream_out / "summary.json").read_text())
    said = [
        ln
        for ln in run.stderr().splitlines()
        if "stream" in ln and ("lost" in ln or "reconnected" in ln)
    ]
    row(
        "MJPEG stream killed mid-run, back 2 s later",
        "loss and reconnect said in the log with counts; summary counts them; keys unique",
        f"exit {code}; log: {' | '.join(said)[:220]}; summary losses {summary['stream_losses']}, "
        f"reconnects {summary['reconnects']}",
        code == 0 and summary["stream_losses"] == 1 and summary["reconnects"] == 1,
    )
    sock = silent_server()
    try:
        start = time.monotonic()
        done = subprocess.run(
            wbc_edge(
                "run",
                f"http://127.0.0.1:{sock.getsockname()[1]}/x",
                "--model",
                str(model),
                "--out",
                str(work / "silent-out"),
                "--no-live",
                "--open-timeout",
                "2",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - start
    finally:
        sock.close()
    row(
        "stream that accepts and never answers, --open-timeout 2",
        "exit 2 within ~2 s plus start-up (OpenCV's default: 30 s)",
        f"exit {done.returncode} after {took:.1f} s: {done.stderr.strip().splitlines()[-1][:100]}",
        done.returncode == 2 and took < 15,
    )

    # 11, 12: usage errors and values that were accepted silently ----------------------------
    calls = [
        ["run", str(folder), "--batch", "abc"],
        ["run", str(folder), "--batch", "0"],
        ["run", str(folder), "--queue", "x"],
        ["run", str(folder), "--model"],
        ["run", str(folder), "--bogus"],
        ["frobnicate"],
        ["run", str(folder), "--limit", "-1"],
        ["run", str(folder), "--immature-flag", "-1"],
        ["run", str(folder), "--immature-flag", "2"],
        ["run", str(folder), "--open-timeout", "0"],
        ["run", str(folder), "--reconnect-tries", "-1"],
        ["train-teacher", "--data", "m.csv", "--epochs", "0"],
        ["train-teacher", "--data", "m.csv", "--epochs", "-1"],
        ["distill", "--data", "m.csv", "--epochs", "-2"],
        ["train-teacher", "--data", "m.csv", "--size", "0"],
        ["export", "onnx", "--model", "m.pt", "--num", "0"],
        ["export", "int8", "--onnx", "m.onnx", "--calib", "s.csv", "--num", "0"],
        ["export", "triton", "--model", "m.onnx", "--out", "r", "--max-batch", "0"],
        ["export", "onnx", "--bogus"],
        ["export", "frobnicate"],
        ["data", "split", "--bogus"],
        ["bench", "--bogus"],
        ["evaluate", "--batch-size", "0"],
    ]
    usage = [_usage_probe(c) for c in calls]
    good_calls = [u for u in usage if u["exit"] == 2 and u["usage_line"] and not u["traceback"]]
    row(
        "bad CLI calls (types, ranges, unknown/missing options and commands)",
        "exit 2, click's usage line, the option named, no traceback",
        f"{len(good_calls)}/{len(usage)} as expected",
        len(good_calls) == len(usage),
        cli_calls=len(usage),
        cli_calls_ok=len(good_calls),
        calls=usage,
    )
    inside = subprocess.run(
        wbc_edge(*args(folder, folder / "results")), capture_output=True, text=True, timeout=120
    )
    row(
        "--out inside the source folder",
        "exit 2, one line; nothing created",
        f"exit {inside.returncode}: {inside.stderr.strip()[:110]}; "
        f"created {(folder / 'results').exists()}",
        inside.returncode == 2 and not (folder / "results").exists(),
    )

    # 13, 14: path safety, CSV formulas, refused checkpoints ---------------------------------
    repo = work / "triton" / "repo"
    repo.mkdir(parents=True)
    (work / "triton" / "escape").mkdir()
    (work / "triton" / "escape" / "keep.txt").write_text("x")
    done = subprocess.run(
        wbc_edge(
            "export", "triton", "--model", str(model), "--out", str(repo), "--name", "../escape"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    row(
        "export triton --name ../escape",
        "exit 2; nothing written or removed outside --out",
        f"exit {done.returncode}; escape/keep.txt still there "
        f"{(work / 'triton/escape/keep.txt').is_file()}",
        done.returncode == 2
        and (work / "triton/escape/keep.txt").is_file()
        and not any(repo.iterdir()),
    )
    from wbc_edge.model.model import Model

    with Model.load(model) as b:
        names = list(b.card.class_names)
    names[0] = '=HYPERLINK("http://example.invalid","x")'
    formula = _card_variant(model, work / "formula.onnx", class_names=names)
    fout = work / "formula-out"
    subprocess.run(
        wbc_edge(*args(many, fout, "--model", str(formula), "--limit", "50")),
        capture_output=True,
        timeout=120,
    )
    import csv

    with (fout / "cells.csv").open(newline="", encoding="utf-8") as f:
        cells = [r["class"] for r in csv.DictReader(f) if "HYPERLINK" in r["class"]]
    safe = sum(c.startswith("'=") for c in cells)
    row(
        "class name =HYPERLINK(...) from a card into cells.csv",
        "every such cell starts with ' (text to a spreadsheet); JSON keeps the name",
        f"{safe}/{len(cells)} class cells neutralised",
        bool(cells) and safe == len(cells),
    )
    import pickle

    evil = work / "evil.pt"
    evil.write_bytes(pickle.dumps({"card": {}, "state_dict": _Evil(str(work / "pwned"))}))
    for label, path in (
        ("a pickle with code in it (.pt)", evil),
        ("an .onnx given as --model to export onnx", model),
    ):
        done = subprocess.run(
            wbc_edge("export", "onnx", "--model", str(path)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = done.stderr.strip().splitlines()
        row(
            f"refused checkpoint: {label}",
            "exit 2, one line saying what the file is and what to pass; no code run",
            f"exit {done.returncode}, {len(lines)} line(s): {lines[-1][:200] if lines else ''}",
            done.returncode == 2
            and len(lines) == 1
            and "weights_only=False" not in done.stderr
            and not (work / "pwned").exists(),
        )
    probe_issue32(model, crops, work, row)
    return {"probes": rows}


# -- issue 32: nothing lost, nothing overwritten, nobody else's corrections ---------------------


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha(p) for p in folder.rglob("*") if p.is_file()}


def _one_line(stderr: str) -> tuple[bool, str]:
    """Whether ``stderr`` is one error line without a traceback, and that line."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in stderr, (lines[-1] if lines else "")[:160]


def _review_url(log: Path, proc: Any, timeout: float = 60) -> str:
    import re

    found: list[str] = []

    def printed() -> bool:
        found[:] = re.findall(r"http://\S+\?token=\S+", log.read_text(errors="replace"))
        return bool(found)

    wait_for(printed, timeout, proc)
    return found[0] if found else ""


def _http(url: str, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    status, payload = response.status, response.read()
    conn.close()
    return status, payload


def _raw_status(url: str, data: bytes) -> str:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall(data)
        try:
            return s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
        except TimeoutError:
            return "no answer in 5 s"


def probe_issue32(model: Path, crops: Path, work: Path, row: Callable[..., None]) -> None:
    """The cases of issue 32, each in real processes on ``model`` and crops from ``crops``."""
    import shutil

    import cv2

    def args(src: Any, out: Path, *extra: str) -> list[str]:
        return ["run", str(src), "--model", str(model), "--out", str(out.parent), "--sample",
                out.name, "--no-live", *extra]  # fmt: skip

    def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(wbc_edge(*argv), capture_output=True, text=True, timeout=timeout)

    root = work / "issue32"
    root.mkdir()
    pool = sorted(crops.rglob("*.jpg"))

    # 1: files deleted mid-run come back ------------------------------------------------------
    src = root / "vanish"
    files = _copy_crops(crops, src, 300)
    out = root / "out" / "vanish"
    run = Run([*args(src, out), "--batch", "1"], root / "vanish.log")
    wait_for(lambda: complete_lines(out / "cells.jsonl") >= 20, 120, run.proc)
    kept = {p: p.read_bytes() for p in files[-100:]}
    for p in kept:
        p.unlink()
    code = run.wait(120)
    errors = complete_lines(out / "errors.jsonl")
    first = len(record_keys(out))
    for p, data in kept.items():
        p.write_bytes(data)
    again = cli(*args(src, out))
    added = len(record_keys(out)) - first
    third = cli(*args(src, out))
    keys = record_keys(out)
    row(
        "1. 100 files of a folder of 300 deleted mid-run, put back, run again (twice)",
        "missing files are error records; the rerun classifies every one of them; the third run "
        "adds none; each file once",
        f"exit {code}; {errors} errors while gone, {first} records; rerun exit {again.returncode} "
        f"added {added}; third exit {third.returncode}, {len(keys)} records, "
        f"{len(keys) - len(set(keys))} repeated",
        code == 0 and errors > 0 and added == errors and len(keys) == len(set(keys)) == 300
        and third.returncode == 0,
    )  # fmt: skip

    # 2: a newline in a file name ---------------------------------------------------------------
    src = root / "newline"
    src.mkdir()
    shutil.copyfile(pool[0], src / "x.jpg\nz.jpg")
    out = root / "out" / "newline"
    first = cli(*args(src, out))
    shutil.copyfile(pool[1], src / "x.jpg")
    second = cli(*args(src, out))
    keys = record_keys(out)
    lines = complete_lines(out / "done.txt")
    row(
        "2. a file named 'x.jpg<newline>z.jpg', then a file 'x.jpg' beside it",
        "one done.txt line for the first; the later x.jpg classified, not skipped",
        f"exits {first.returncode}/{second.returncode}; done.txt {lines} lines; {len(keys)} "
        "records",
        first.returncode == second.returncode == 0 and lines == 2 and len(keys) == 2,
    )

    # 3: --report over files that are not reports ----------------------------------------------
    src = root / "report-src"
    images = _copy_crops(crops, src, 5)
    out = root / "out" / "report"
    cli(*args(src, out))
    before, image = _tree(out), _sha(images[1])
    refused = [
        cli(*args(src, out, "--report", str(target))).returncode
        for target in (images[1], out / "cells.jsonl", out / "run.json")
    ]
    row(
        "3. --report SOURCE/b.jpg, --report OUT/SAMPLE/cells.jsonl, --report OUT/SAMPLE/run.json",
        "each exit 2 in one line before anything is written; the image and the sample unchanged",
        f"exits {refused}; image unchanged {_sha(images[1]) == image}; sample folder unchanged "
        f"{_tree(out) == before}",
        refused == [2, 2, 2] and _sha(images[1]) == image and _tree(out) == before,
    )

    # 4: --annotate into the watched folder -----------------------------------------------------
    src = root / "annotate-in"
    _copy_crops(crops, src, 3)
    before = _tree(src)
    out = root / "out" / "annotate"
    done = cli(*args(src, out, "--watch", "--annotate", str(src / "annotated")))
    ok, line = _one_line(done.stderr)
    row(
        "4. --watch SOURCE --annotate SOURCE/annotated",
        "exit 2, one line; nothing written into the source or the results",
        f"exit {done.returncode}: {line}; source unchanged {_tree(src) == before}; results "
        f"created {out.exists()}",
        done.returncode == 2 and ok and _tree(src) == before and not out.exists(),
    )

    # 5: a camera that reuses one file name -----------------------------------------------------
    inbox = root / "camera"
    inbox.mkdir()
    out = root / "out" / "camera"
    run = Run([*args(inbox, out), "--watch", "--settle", "0.2", "--poll", "0.1"], root / "cam.log")
    shots = 0
    for i, shot in enumerate(pool[:3]):
        capture = inbox / "capture.jpg"
        tmp = inbox / "capture.jpg.part"
        shutil.copyfile(shot, tmp)
        os.utime(tmp, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
        tmp.replace(capture)
        shots += wait_for(lambda n=i + 1: len(record_keys(out)) >= n, 60, run.proc)
    os.utime(inbox / "capture.jpg", ns=(2 * 10**18, 2 * 10**18))  # touched only
    time.sleep(3)
    run.signal(signal.SIGTERM)
    code = run.wait()
    keys = record_keys(out)
    said = run.stderr().count("new content")
    row(
        "5. --watch; a camera writes capture.jpg three times (new content each), then touches it",
        "3 records with 3 keys, each replacement said in the log; the touch adds none",
        f"exit {code}; {len(keys)} records, {len(set(keys))} keys; said {said}x",
        code == 0 and shots == 3 and len(keys) == len(set(keys)) == 3 and said == 2,
    )

    # 6: option values that were accepted --------------------------------------------------------
    src = root / "options"
    _copy_crops(crops, src, 2)
    out = root / "out" / "options"
    bad = [["--margin", "nan"], ["--margin", "-5"], ["--threads", "-5"], ["--settle", "-1"],
           ["--poll", "0"], ["--rbc-px", "nan"], ["--fps", "-1"]]  # fmt: skip
    calls = [cli(*args(src, out, *b)) for b in bad]
    calls.append(cli("review", str(root / "out" / "report"), "--port", "99999"))
    good = [c for c in calls if c.returncode == 2 and "Traceback" not in c.stderr]
    row(
        "6. --margin nan/-5, --threads -5, --settle -1, --poll 0, --rbc-px nan, --fps -1; "
        "review --port 99999",
        "each exit 2 naming the option, no traceback; no sample folder (run.json) written",
        f"{len(good)}/{len(calls)} as expected; results created {out.exists()}",
        len(good) == len(calls) and not out.exists(),
    )

    # 7, 11: the review page: malformed requests, the token, who corrected what ----------------
    sample = root / "out" / "report"
    log = root / "review.log"
    review = Run(["review", str(sample), "--port", "0", "--operator", "AB"], log)
    try:
        url = _review_url(log, review.proc)
        token = url.split("?token=", 1)[1] if url else ""
        cookie = {"Cookie": f"wbc_review_{url.rsplit(':', 1)[1].split('/')[0]}={token}"}
        cell = json.loads((sample / "cells.jsonl").read_text().splitlines()[0])["id"]
        change = json.dumps({"cell": cell, "action": "confirm"}).encode()
        jtype = {"Content-Type": "application/json"}
        head = b"POST /api/correct HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += b"Content-Type: application/json\r\n"
        malformed = {
            "array body": _http(url, "POST", "/api/correct", b"[1, 2]", {**jtype, **cookie})[0],
            "Content-Length: abc": _raw_status(url, head + b"Content-Length: abc\r\n\r\n{}"),
            "Content-Length: -1": _raw_status(url, head + b"Content-Length: -1\r\n\r\n"),
        }
        without = _http(url, "POST", "/api/correct", change, jtype)[0]
        state = _http(url, "GET", "/api/state", None, {})[0]
        first_visit = _http(url, "GET", "/?token=" + token, None, {})[0]
        with_cookie = _http(url, "POST", "/api/correct", change, {**jtype, **cookie})[0]
        alive = review.proc.poll() is None
    finally:
        review.signal(signal.SIGINT)
        code = review.wait(30)
    entries = [json.loads(x) for x in (sample / "corrections.jsonl").read_text().splitlines()]
    shown = {k: str(v) for k, v in malformed.items()}
    row(
        "7. review page: a JSON array body, Content-Length abc, Content-Length -1",
        "400 each, at once; the server goes on; no traceback",
        f"{shown}; still serving {alive}; traceback {'Traceback' in review.stderr()}",
        malformed["array body"] == 400
        and all(str(v).startswith("HTTP/1.1 400") for k, v in malformed.items() if "Length" in k)
        and alive
        and "Traceback" not in review.stderr(),
    )
    row(
        "11. review page: a POST and a GET without the token; the printed link; a POST with "
        "the cookie",
        "403 without it; the link has ?token= and becomes a cookie (303); the correction "
        "records operator, time and client address",
        f"link printed {bool(token)}; without token POST {without}, GET {state}; first visit "
        f"{first_visit}; with cookie {with_cookie}; {len(entries)} correction(s): "
        f"{[{k: e.get(k) for k in ('operator', 'client')} for e in entries]}; exit {code}",
        bool(token) and without == state == 403 and first_visit == 303 and with_cookie == 200
        and len(entries) == 1 and entries[0]["operator"] == "AB"
        and entries[0].get("client") == "127.0.0.1" and bool(entries[0].get("time")),
    )  # fmt: skip

    # 8: one line naming the file, never a traceback ---------------------------------------------
    broken = root / "broken-card.onnx"
    _card_text(model, broken, '{"architecture": "tinyresnet", "class_names": [')
    card = cli(*args(root / "report-src", root / "out" / "card", "--model", str(broken)))
    (sample / "corrections.jsonl").write_bytes(
        (sample / "corrections.jsonl").read_bytes()
        + json.dumps({"cell": cell, "action": "reclassify", "class": "Unicorn"}).encode()
        + b"\n"
    )
    unknown = cli("report", str(sample))
    lines = (sample / "corrections.jsonl").read_bytes().splitlines(keepends=True)
    (sample / "corrections.jsonl").write_bytes(b"".join(lines[:-1]) + b"\xff\xfe\n")
    utf = cli("report", str(sample))
    (sample / "corrections.jsonl").write_bytes(b"".join(lines[:-1]))
    api = subprocess.run(  # the Python API, given arrays it cannot use
        [sys.executable, "-c", _API_PROBE, str(model)], capture_output=True, text=True, timeout=120
    )
    results = [("malformed card JSON", card), ("unknown class", unknown), ("bad UTF-8", utf)]
    said = {label: _one_line(done.stderr) + (done.returncode,) for label, done in results}
    api_ok = api.returncode == 0 and api.stdout.count("UserError") == 5
    full = _full_disk(args, crops, root)
    row(
        "8. an ONNX card of malformed JSON; corrections with an unknown class and with bad "
        "UTF-8; API arrays 0x0, 2 and 5 channels, 1-D, float; a full disk",
        "one line each naming the file (and line), exit 2; API: one UserError each; full disk: "
        "names the file, keeps the records, resumes",
        "; ".join(f"{k}: exit {v[2]} {v[1]!r}" for k, v in said.items())
        + f"; API {api.stdout.count('UserError')}/5 UserError; full disk: {full['observed']}",
        all(v[0] and v[2] == 2 for v in said.values())
        and "broken-card.onnx" in said["malformed card JSON"][1]
        and "corrections.jsonl:" in said["unknown class"][1]
        and "corrections.jsonl:" in said["bad UTF-8"][1]
        and api_ok
        and full["ok"],
    )

    # 9: a JPEG named .png -------------------------------------------------------------------------
    src = root / "named"
    src.mkdir()
    shutil.copyfile(pool[0], src / "cell.png")
    data = cv2.imencode(".png", cv2.imread(str(pool[1])))[1].tobytes()
    (src / "field.jpg").write_bytes(data)
    out = root / "out" / "named"
    done = cli(*args(src, out))
    row(
        "9. a JPEG named .png and a PNG named .jpg",
        "both classified (decoded by content), no error",
        f"exit {done.returncode}; {len(record_keys(out))} records, "
        f"{complete_lines(out / 'errors.jsonl')} errors",
        done.returncode == 0 and len(record_keys(out)) == 2
        and complete_lines(out / "errors.jsonl") == 0,
    )  # fmt: skip

    # 10: summary.json after a resume that adds nothing -------------------------------------------
    out = root / "out" / "report"
    done = cli(*args(root / "report-src", out))
    summary = json.loads((out / "summary.json").read_text())
    row(
        "10. a resume that adds nothing: summary.json",
        "items and cells are the sample's (as its differential); this run's under this_run",
        f"exit {done.returncode}; items {summary.get('items')}, cells {summary.get('cells')}, "
        f"this_run {summary.get('this_run')}",
        done.returncode == 0 and summary.get("items") == summary.get("cells") == 5
        and (summary.get("this_run") or {}).get("items") == 0,
    )  # fmt: skip


_API_PROBE = """
import sys
import numpy as np
import wbc_edge
from wbc_edge.errors import UserError
m = wbc_edge.load(sys.argv[1])
for a in (np.zeros((0, 0, 3), np.uint8), np.zeros((40, 40, 2), np.uint8),
          np.zeros((40, 40, 5), np.uint8), np.zeros(1600, np.uint8),
          np.zeros((40, 40, 3), np.float32)):
    try:
        m(a)
        print("accepted", a.shape)
    except UserError as exc:
        print("UserError", str(exc)[:80])
"""


def _card_text(model: Path, dest: Path, text: str) -> Path:
    """A copy of an ONNX model whose card is ``text`` as it is (malformed JSON, say)."""
    import onnx

    from wbc_edge.model.card import ONNX_METADATA_KEY

    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    props[ONNX_METADATA_KEY] = text
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dest))
    return dest


def _full_disk(args: Callable[..., list[str]], crops: Path, root: Path) -> dict[str, Any]:
    """A real full disk: a 2 MB tmpfs as the results folder (needs root to mount; said when
    it cannot be made)."""
    import shutil

    mount = root / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        return {"ok": True, "observed": "not run (mounting a small tmpfs needs root)"}
    try:
        src = root / "full-src"
        _copy_crops(crops, src, 600)
        out = mount / "full"
        done = subprocess.run(wbc_edge(*args(src, out)), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        last = [ln for ln in done.stderr.splitlines() if "error:" in ln]
        line = last[-1][:160] if last else ""
        before = record_keys(out)
        saved = root / "full-saved" / out.name  # the same sample, in another --out
        shutil.copytree(out, saved)
        subprocess.run(["umount", str(mount)], check=False)
        done_again = subprocess.run(wbc_edge(*args(src, saved)), capture_output=True, text=True,
                                    timeout=300)  # fmt: skip
        after = record_keys(saved)
        return {
            "ok": done.returncode == 2 and "No space left on device" in line and str(out) in line
            and done_again.returncode == 0 and len(after) == len(set(after)) == 600
            and set(before) <= set(after),
            "observed": f"exit {done.returncode} after {len(before)} records: "
            f"{line.replace(str(root), 'WORK')!r}; resumed elsewhere: exit "
            f"{done_again.returncode}, {len(after)} records",
        }  # fmt: skip
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, check=False)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204 - what a malicious checkpoint does
        return (os.system, (f"touch {self.target}",))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Reliability probes (issues 15 and 32)",
        "",
        f"`{result['command']}` on {result['date']}; model `{result['model']}`, crops from "
        f"`{result['crops']}`. Every probe runs the real CLI in its own process.",
        "",
    ]
    from wbc_edge.benchmarks.machine import describe

    lines += [f"- {line}" for line in describe(result["machine"])]
    lines += [f"- load average after the probes: {result['load_avg_after']}", ""]
    t = result["totals"]
    lines += [
        f"**{t['ok']}/{t['probes']} probes as expected.** Bad files tried: {t['bad_files_tried']}, "
        f"handled: {t['bad_files_handled']}; kill -9 cycles: {t['kill_cycles']} (mid-run "
        f"{t['killed_mid_run']}), records lost: {t['records_lost']}, repeated: "
        f"{t['records_repeated']}; concurrent runs: {t['concurrent_runs']}; CLI calls: "
        f"{t['cli_calls_ok']}/{t['cli_calls']} exit 2 with the usage line.",
        "",
        markdown_table(
            ["probe", "expected", "observed", "ok"],
            [
                [r["probe"], r["expected"], r["observed"], "yes" if r["ok"] else "**NO**"]
                for r in result["probes"]
            ],
        ),
    ]
    if result.get("notes"):
        lines += ["", *[f"- {note}" for note in result["notes"]]]
    lines += [
        "",
        "The 10,000-file soak through `--watch` (RSS and CPU over time) is issue 17's: "
        "see [runtime-throughput.md](runtime-throughput.md).",
        "",
    ]
    return "\n".join(lines)


def _without_machine_paths(result: Any, work: Path) -> Any:
    """Scratch paths as ``WORK``, the checkout's as relative paths: a record a reader can rerun."""
    repo = Path(__file__).resolve().parents[2]
    swaps = [(str(work.resolve()), "WORK"), (str(work), "WORK"), (str(repo) + "/", "")]
    swaps.append((str(repo.parent) + "/", "../"))  # ../shared/data beside the checkout

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in swaps:
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(result)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    from wbc_edge.benchmarks.machine import machine_info
    from wbc_edge.models import default_model

    parser = argparse.ArgumentParser(description="Run the reliability probes and record them.")
    parser.add_argument("--crops", type=Path, required=True, help="folder of cell crops (JPEG)")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: packaged)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder")
    parser.add_argument(
        "--rewrite", type=Path, default=None, help="only rewrite the markdown of this JSON"
    )
    ns = parser.parse_args(argv)
    if ns.rewrite is not None:  # the JSON (with any notes added) is the record; md follows it
        result = json.loads(ns.rewrite.read_text())
        write_record(ns.out / "reliability", result, markdown(result))
        return 0
    model = ns.model or default_model()
    work = Path(tempfile.mkdtemp(prefix="reliability-", dir=ns.work)).resolve()
    machine = machine_info()
    result: dict[str, Any] = {
        "command": "python benchmarks/studies/reliability.py " + " ".join(argv or sys.argv[1:]),
        "date": utc_date(),
        "model": str(model),
        "crops": str(ns.crops),
        "machine": machine,
    }
    result.update(probe_all(model, ns.crops, work))
    result = _without_machine_paths(result, work)
    result["load_avg_after"] = load_average()
    probes = result["probes"]
    total = lambda key: sum(p.get(key, 0) for p in probes)  # noqa: E731
    result["totals"] = {
        "probes": len(probes),
        "ok": sum(p["ok"] for p in probes),
        **{
            k: total(k)
            for k in (
                "bad_files_tried",
                "bad_files_handled",
                "kill_cycles",
                "killed_mid_run",
                "records_lost",
                "records_repeated",
                "concurrent_runs",
                "cli_calls",
                "cli_calls_ok",
            )
        },
    }
    write_record(ns.out / "reliability", result, markdown(result))
    print(markdown(result))
    return 0 if result["totals"]["ok"] == result["totals"]["probes"] else 1


if __name__ == "__main__":
    sys.exit(main())
