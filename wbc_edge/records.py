"""The one home of recorded results: the machine a number was measured on, the command that
made it, the date, and the writing of ``<name>.json`` (numbers) beside ``<name>.md`` (people).

``kd`` (ablation), ``export`` (INT8 sweep), ``runtime`` (finder evaluation) and ``benchmarks``
describe the machine, stamp the date and name the command through these functions, and build
their Markdown tables with :func:`markdown_table`, so every record has the same context and a
new measurement adds rows, not a new writer (asv's and Ultralytics' idea). Standard library only.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def run_command(cmd: list[str], timeout: float = 10.0) -> str | None:
    """stdout of ``cmd``, or None when it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's feature flags from /proc/cpuinfo (x86 "flags", ARM "Features"); empty
    where the file is missing."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name; ARM boards lack it in /proc/cpuinfo, so fall back to lscpu."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if m:
        return m.group(1).strip()
    lscpu = run_command(["lscpu"]) if cpuinfo is None else None
    if lscpu:
        m = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def gpu_names(runner: Callable[[list[str]], str | None] = run_command) -> list[str]:
    """Discrete NVIDIA GPUs from nvidia-smi (a Jetson's GPU is named by its board instead);
    no torch, so describing the machine never loads a training framework."""
    out = runner(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not out:
        return []
    return [
        ", driver ".join(p.strip() for p in line.split(",")) for line in out.splitlines() if line
    ]


# x86 flags under which ONNX Runtime's U8S8 kernels use VNNI dot products, which do not saturate.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def saturates_u8s8(flags: set[str]) -> bool:
    """AVX2 without VNNI: ONNX Runtime's U8S8 kernels add pairs of u8 x s8 products in int16
    (VPMADDUBSW), which saturates with full 8-bit weights
    (benchmarks/results/export-int8-cpu.md)."""
    return "avx2" in flags and not flags & VNNI_FLAGS


def isa_note(flags: set[str]) -> str:
    """What an x86 CPU's int8 kernels can use, for a record's machine line: INT8 accuracy
    depends on it (:func:`saturates_u8s8`); "" for a CPU without AVX2."""
    if flags & VNNI_FLAGS:
        return "VNNI"
    return "AVX2, no VNNI" if saturates_u8s8(flags) else ""


def machine_line(gpu: str | None = None, **versions: str) -> str:
    """One line for a record: CPU (with :func:`isa_note`), core count (shared on this project's
    machines), the GPU (detected with :func:`gpu_line` unless ``gpu`` names it, never assumed
    absent) and any library versions that matter to the number."""
    note = isa_note(cpu_flags())
    cpu = f"{cpu_name()} ({note})" if note else cpu_name()
    parts = [cpu, f"{os.cpu_count()} CPU cores (shared)", gpu or gpu_line() or "no GPU"]
    parts += [f"{name} {version}" for name, version in versions.items()]
    return ", ".join(parts)


def gpu_line() -> str | None:
    """The GPUs of this machine for :func:`machine_line`, or None when it has none."""
    return "; ".join(gpu_names()) or None


def load_average() -> float | None:
    """The 1-minute load average: how busy the machine was beside the measurement."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def utc_date(timestamp: float | None = None) -> str:
    """The date format of every record: ``2026-12-01 10:15 UTC`` (now, or ``timestamp``)."""
    when = (
        datetime.datetime.now(datetime.timezone.utc)
        if timestamp is None
        else datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    )
    return when.strftime("%Y-%m-%d %H:%M UTC")


def command_line(fallback: str = "") -> str:
    """The command this process runs: ``wbc-edge ...`` for the CLI, the interpreter and the
    script for a study script, else ``fallback`` (a caller that rebuilds its command)."""
    if Path(sys.argv[0]).name in ("wbc-edge", "__main__.py", "-m"):
        return shlex.join(["wbc-edge", *sys.argv[1:]])
    if fallback:
        return fallback
    if sys.argv[0].endswith(".py"):  # "python", not this machine's interpreter path
        return shlex.join(["python", *sys.argv])
    return shlex.join(["wbc-edge", *sys.argv[1:]])


def record_header(command: str = "", **versions: str) -> dict[str, str]:
    """The head every record starts with: date, command (this process's own when not given)
    and machine (:func:`machine_line`, GPU detected, with any ``versions`` that matter)."""
    return {
        "date": utc_date(),
        "command": command or command_line(),
        "machine": machine_line(**versions),
    }


def portable_path(path: str | Path, root: str | Path | None = None) -> str:
    """A path as a record should hold it: relative to the repository (``root``, default the
    working folder) when it lies inside it or beside it (``../shared/...``), else as the caller
    gave it (a user's own file elsewhere). A committed record holding a machine's folder is
    caught by ``tests/test_records_portable.py``."""
    p = Path(path).resolve()
    base = Path(root or os.getcwd()).resolve()
    for anchor, prefix in ((base, ""), (base.parent, "../")):
        try:
            return prefix + str(p.relative_to(anchor))
        except ValueError:
            continue
    return str(path)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A Markdown table: readable in a terminal or log and pasteable into a results page.

    ``align`` has one letter per column, ``l`` or ``r`` (numbers read better right-aligned);
    columns past its end are left-aligned. A ``|`` inside a cell is escaped so that it cannot
    split the row; a blank cell is written ``| |``.
    """

    def row_line(cells: Sequence[Any]) -> str:
        text = [str(c).replace("|", "\\|") for c in cells]
        return "|" + "|".join(f" {t} " if t else " " for t in text) + "|"  # blank: "| |"

    rule = "".join("---:|" if align[i : i + 1] == "r" else "---|" for i in range(len(header)))
    return "\n".join([row_line(header), "|" + rule, *(row_line(r) for r in rows)])


def write_record(path: str | Path, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<path>.json`` (the numbers, with their command, machine and date) and
    ``<path>.md`` (the same for people) side by side; returns both paths."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".md")
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path
