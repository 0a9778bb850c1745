"""NVIDIA's real TensorRT Python bindings, importable on a machine without a GPU.

NVIDIA publishes the bindings of each TensorRT release on PyPI as a wheel of about 1 MB
(``tensorrt-bindings``, ``tensorrt-cu12-bindings``); the libraries they link (``libnvinfer``
and friends) come from NVIDIA's own index, which CI cannot reach. The binding module needs only
the C factory functions of those libraries to load, so small placeholder libraries that export
them (returning NULL: nothing can be built or run) are enough to import NVIDIA's real module
and ask it which classes, attributes and enum members each version has.

``python tests/tensorrt_bindings.py`` fetches the wheels into ``.cache/tensorrt-bindings/``
(ignored by git); ``.ci/run`` does it at CI install time (``make tensorrt-bindings``), and the
test fixture does it too when the folder is missing. The product never downloads anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("WBC_EDGE_TRT_BINDINGS", REPO / ".cache" / "tensorrt-bindings"))

# TensorRT version -> the PyPI requirement of its bindings. JetPack 6.0 ships 8.6, JetPack
# 6.1/6.2 ship 10.3; 11.x is the newest NVIDIA publishes for PCs (no JetPack has it yet).
# 8.5 (JetPack 5.1) has no bindings-only wheel on PyPI.
WHEELS = {
    "8.6.1": "tensorrt-bindings==8.6.1",
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",
    "11.4.0.106": "tensorrt-cu12-bindings==11.4.0.106",
}

# What the binding module links; every library gets every symbol (duplicates are harmless).
LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin", "nvparsers")
PLACEHOLDER_C = r"""
/* Placeholders for the C factory functions NVIDIA's binding module links against. */
void *createInferBuilder_INTERNAL(void *logger, int version) { return 0; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return 0; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return 0; }
void *getBuilderPluginRegistry(int capability) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 1; }
/* TensorRT 8.x also links the UFF and Caffe parsers (C++ names, spelled mangled here). */
void *_ZN11nvuffparser15createUffParserEv(void) { return 0; }
void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(void) {}
void *_ZN14nvcaffeparser117createCaffeParserEv(void) { return 0; }
void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void) {}
"""


def wheel_dir(version: str) -> Path:
    return CACHE / version


def have(version: str) -> bool:
    return (wheel_dir(version) / "tensorrt_bindings" / "__init__.py").is_file()


def fetch(version: str, timeout_s: int = 60) -> str | None:
    """Install the bindings of ``version`` into the cache; None when done, else the reason."""
    if have(version):
        return None
    target = wheel_dir(version)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
        "--disable-pip-version-check", "--retries", "0", "--timeout", "15",
        "--target", str(tmp), WHEELS[version],
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pip install {WHEELS[version]} failed: {exc}"
    if done.returncode != 0 or not (tmp / "tensorrt_bindings" / "__init__.py").is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"pip install {WHEELS[version]} failed: {tail[0]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return None


def build_placeholders(out: Path, major: int) -> Path:
    """``out/lib<name>.so.<major>`` for every library the bindings link; returns ``out``."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc) to build the placeholder TensorRT libraries")
    out.mkdir(parents=True, exist_ok=True)
    source = out / "placeholder.c"
    source.write_text(PLACEHOLDER_C)
    for name in LIBRARIES:
        soname = f"lib{name}.so.{major}"
        cmd = [
            cc,
            "-shared",
            "-fPIC",
            "-o",
            str(out / soname),
            f"-Wl,-soname,{soname}",
            str(source),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return out


# Run in a child process (one TensorRT per process): argv = wheel folder, JSON of
# [owner, name] pairs; prints the TensorRT version and the pairs the module lacks.
CHECK_PY = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import tensorrt_bindings as trt
missing = []
for owner, name in json.loads(sys.argv[2]):
    holder = trt if owner == "tensorrt" else getattr(trt, owner, None)
    if holder is None or not hasattr(holder, name):
        missing.append([owner, name])
print(json.dumps({"version": trt.__version__, "missing": missing}))
"""


def missing_names(version: str, libs: Path, names: list[tuple[str, str]]) -> dict:
    """Ask NVIDIA's real module of ``version`` which of ``names`` it lacks."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(libs)}
    cmd = [sys.executable, "-c", CHECK_PY, str(wheel_dir(version)), json.dumps(sorted(names))]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"importing NVIDIA's tensorrt {version} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    failed = 0
    for version in WHEELS:
        reason = fetch(version)
        print(f"tensorrt bindings {version}: {reason or wheel_dir(version)}")
        failed += reason is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
