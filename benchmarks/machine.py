"""The machine a benchmark ran on: CPU, GPU, library versions, and on a Jetson its power state.

A latency number means nothing without the machine, the library versions and, on a Jetson, the
power mode and clocks (the same module is several times slower in a 7 W mode than at MAXN with
``jetson_clocks``). Every probe here is optional: what a machine lacks is recorded as absent,
never guessed. External commands go through a ``Runner`` so tests can feed recorded output.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from wbc_edge.records import cpu_name, gpu_names, load_average, run_command

# A runner takes a command line and returns its stdout, or None when it cannot run it.
Runner = Callable[[list[str]], "str | None"]

# Distribution names to report; JetPack's tensorrt may lack pip metadata (see _version).
PACKAGES = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "tensorrt",
    "opencv-python-headless",
)


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str]:
    """Versions from package metadata: nothing is imported, so torch is never loaded for this.

    JetPack installs tensorrt as a Debian package that may carry no pip metadata; only then is
    it imported for its ``__version__``.
    """
    found = {name: v for name in PACKAGES if (v := _version(name))}
    if "tensorrt" not in found:
        try:
            import tensorrt  # type: ignore[import-not-found]

            found["tensorrt"] = tensorrt.__version__
        except ImportError:
            pass
    return found


def jetson_model(root: str | Path = "/") -> str | None:
    """The board name (e.g. 'NVIDIA Jetson Orin Nano Developer Kit') when this is a Jetson."""
    root = Path(root)
    if not (root / "etc" / "nv_tegra_release").is_file():
        return None
    return _read(root / "proc" / "device-tree" / "model") or "NVIDIA Jetson (unknown model)"


def l4t_release(root: str | Path = "/") -> str | None:
    text = _read(Path(root) / "etc" / "nv_tegra_release")
    m = re.match(r"# R(\d+) \(release\), REVISION: ([\d.]+)", text or "")
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """``nvpmodel -q`` -> {"name": "MAXN", "id": 0}. The id is the line after the name."""
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", text)
    if m:
        return {"name": m.group(1), "id": int(m.group(2))}
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    return {"name": m.group(1), "id": None} if m else None


def parse_jetson_clocks(text: str) -> dict[str, Any] | None:
    """``jetson_clocks --show`` -> whether the CPU cores, GPU and memory clocks are pinned.

    jetson_clocks raises each online CPU core's and the GPU's minimum frequency to the maximum,
    and pins the memory clock with ``FreqOverride=1``; DLA/PVA lines are left out of the verdict.
    """
    units: dict[str, bool] = {}
    for line in text.splitlines():
        freq = re.search(r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", line)
        if not freq:
            continue
        pinned = freq.group(1) == freq.group(2) == freq.group(3)
        name = line.split()[0].rstrip(":")
        if re.fullmatch(r"cpu\d+", name):
            if "Online=0" not in line:
                units[name] = pinned
        elif name == "GPU":
            units[name] = pinned
        elif name == "EMC":
            units[name] = pinned or "FreqOverride=1" in line
    if not units:
        return None
    return {"locked": all(units.values()), "units": units}


# "VDD_IN 5291mW/5291mW": rail name, instantaneous mW, average mW (JetPack 5 and 6 format).
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")


def parse_tegrastats_power(line: str) -> float | None:
    """Board input power in watts from one tegrastats line.

    VDD_IN is the module's input rail (Orin Nano/NX, Xavier NX); where there is none (AGX Orin,
    AGX Xavier) the rails are summed, which leaves out conversion losses: a lower bound.
    """
    rails = {name: int(now) for name, now, _avg in _RAIL.findall(line)}
    if not rails:
        return None
    total = rails["VDD_IN"] if "VDD_IN" in rails else sum(rails.values())
    return total / 1000.0


class PowerMonitor:
    """Samples board power with ``tegrastats`` while a block runs (a context manager).

    ``mean_w`` is None when tegrastats is absent (any machine but a Jetson) or gave no readings;
    callers then report no energy figure rather than a made-up one.
    """

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats") -> None:
        self.command = [command, "--interval", str(interval_ms)]
        self.samples: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return shutil.which(self.command[0]) is not None

    def __enter__(self) -> PowerMonitor:
        if self.available:
            self._proc = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            watts = parse_tegrastats_power(line)
            if watts is not None:
                self.samples.append(watts)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean_w(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def wait_for_samples(monitor: PowerMonitor, n: int = 2, timeout_s: float = 2.0) -> None:
    """Block until the monitor has ``n`` readings, so a short timed block is not unmeasured."""
    end = time.monotonic() + timeout_s
    while monitor.available and len(monitor.samples) < n and time.monotonic() < end:
        time.sleep(0.02)


def machine_info(runner: Runner = run_command, root: str | Path = "/") -> dict[str, Any]:
    """Everything about this machine that a latency figure depends on."""
    mem = re.search(r"MemTotal:\s+(\d+) kB", _read(Path(root) / "proc" / "meminfo") or "")
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": round(int(mem.group(1)) / 1024**2, 1) if mem else None,
        # Other work on the machine slows every row; the load says how busy it was at the start.
        "load_avg_1m": load_average(),
        "gpus": gpu_names(runner),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "jetson": None,
    }
    board = jetson_model(root)
    if board is not None:
        info["gpus"] = info["gpus"] or [f"{board} (integrated)"]
        nvp = runner(["nvpmodel", "-q"])
        clocks = runner(["jetson_clocks", "--show"])
        info["jetson"] = {
            "model": board,
            "l4t": l4t_release(root),
            "nvpmodel": parse_nvpmodel(nvp) if nvp else None,
            # jetson_clocks --show needs root; None says "unknown", not "off"
            "jetson_clocks": parse_jetson_clocks(clocks) if clocks else None,
            "power_source": "tegrastats" if shutil.which("tegrastats") else None,
        }
    return info


def describe(info: dict[str, Any]) -> list[str]:
    """The machine block as short lines, for the console and the markdown report."""
    libs = ", ".join(f"{k} {v}" for k, v in sorted(info["libraries"].items()))
    cores = info["cpu_cores"]
    usable = info.get("cpu_cores_usable")
    core_text = f"{cores} cores" + (f" ({usable} usable)" if usable and usable != cores else "")
    lines = [
        f"CPU: {info['cpu']}, {core_text}, {info.get('memory_gb')} GB RAM ({info['arch']}), "
        f"load average {info.get('load_avg_1m')} at the start",
        f"GPU: {', '.join(info['gpus']) if info['gpus'] else 'none'}",
        f"Python {info['python']}; {libs}",
    ]
    j = info.get("jetson")
    if j:
        nvp = j.get("nvpmodel")
        clocks = j.get("jetson_clocks")
        mode = f"{nvp['name']} (mode {nvp['id']})" if nvp else "unknown"
        pinned = ("on" if clocks["locked"] else "off") if clocks else "unknown (run as root)"
        power = j.get("power_source") or "nothing (no tegrastats)"
        lines.append(
            f"Jetson: {j['model']}, L4T {j.get('l4t')}, nvpmodel {mode}, "
            f"jetson_clocks {pinned}, power from {power}"
        )
    return lines
