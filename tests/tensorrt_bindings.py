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


# Run in a child process (one TensorRT per process): argv = wheel folder, a JSON file of
# {"names": [[owner, name]], "calls": [[owner, method, [kinds], [keywords]]]}; prints the
# TensorRT version, the names the module lacks and the calls no signature of it accepts.
CHECK_PY = r"""
import json, re, sys
sys.path.insert(0, sys.argv[1])
import tensorrt_bindings as trt
todo = json.load(open(sys.argv[2]))

def holder(owner):
    return trt if owner == "tensorrt" else getattr(trt, owner, None)

missing = [[o, n] for o, n in todo["names"] if holder(o) is None or not hasattr(holder(o), n)]

def split(text):
    # "a: int, b: List[int] = [1, 2]" -> ["a: int", "b: List[int] = [1, 2]"]
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(<" and 1 or (ch in "])>" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(cur.strip()); cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur.strip()] if p]

def signatures(func, name):
    out = []
    for line in (func.__doc__ or "").splitlines():
        m = re.match(r"^\s*(?:\d+\. )?" + re.escape(name) + r"\((.*)\) -> ", line)
        if m and "*args" not in m.group(1):
            params = []
            for p in split(m.group(1)):
                pname, _, rest = p.partition(":")
                ptype, _, default = rest.partition("=")
                params.append((pname.strip(), ptype.strip(), bool(default.strip())))
            out.append([p for p in params if p[0] != "self"])
    return out

def fits(params, kinds, keywords):
    if len(kinds) > len(params):
        return False
    for (pname, ptype, _), kind in zip(params, kinds):
        base = ptype.split(".")[-1]
        base = {"SupportsInt": "int", "SupportsFloat": "float"}.get(base, base)
        if base in ("str", "int", "bool", "float") or kind in ("str", "int", "bool", "float"):
            ok = {"str": ("str",), "int": ("int", "bool"), "bool": ("bool",),
                  "float": ("float", "int")}.get(base, ())
            if base in ("str", "int", "bool", "float") and kind not in ok:
                return False
            if kind == "str" and base != "str":
                return False
        real_kind, real_base = getattr(trt, kind, None), getattr(trt, base, None)
        if isinstance(real_kind, type) and isinstance(real_base, type):
            if not issubclass(real_kind, real_base):  # a BuilderFlag for a MemoryPoolType
                return False
    rest = params[len(kinds):]
    names = {p[0] for p in rest}
    if any(k not in names for k in keywords):
        return False
    return all(has_default or pname in keywords for pname, _, has_default in rest)

bad, unparsed = [], []
for owner, method, kinds, keywords in todo["calls"]:
    h = holder(owner)
    func = getattr(h, method, None) if h is not None else None
    if func is None:
        continue  # already reported as a missing name
    sigs = signatures(func, method)
    if not sigs:
        unparsed.append([owner, method])
    elif not any(fits(p, kinds, keywords) for p in sigs):
        bad.append([owner, method, kinds, keywords, func.__doc__.strip().splitlines()[0]])
print(json.dumps({"version": trt.__version__, "missing": missing, "bad_calls": bad,
                  "unparsed": unparsed}))
"""


def check(version: str, libs: Path, names: list, calls: list | None = None) -> dict:
    """Ask NVIDIA's real module of ``version`` which of ``names`` it lacks and which
    ``calls`` (owner, method, argument kinds, keywords) none of its signatures accepts."""
    import tempfile

    env = {**os.environ, "LD_LIBRARY_PATH": str(libs)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"names": sorted(names), "calls": sorted(calls or [])}, f)
    try:
        cmd = [sys.executable, "-c", CHECK_PY, str(wheel_dir(version)), f.name]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    finally:
        os.unlink(f.name)
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
