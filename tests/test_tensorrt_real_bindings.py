"""Every TensorRT name our builder and backend use exists in NVIDIA's real bindings, and every
call fits a signature there, in each version where the code uses it (8.6.1 = JetPack 6.0,
10.3.0 = JetPack 6.1/6.2, 11.4 = PCs).

How the names are found, so that a new call cannot escape the check:

1. The builder and the backend run every scenario (each precision, DLA, implicit INT8 from
   images and from a cache, timing cache accepted / rejected / absent, parse and build failures,
   dynamic and static engines) against the recording stand-in (``trt_standin.py``) at each
   version; it records every ``(class, attribute)`` our code touched at that version.
2. The modules in ``TRT_MODULES`` are read with ``ast``: every attribute taken from a value that
   comes from ``tensorrt`` must appear in some recording, so a call on a path no scenario
   reaches fails here until a scenario covers it. Methods our calibrator overrides are read the
   same way.
3. A child process imports NVIDIA's real module of that version (wheels from PyPI, see
   ``tensorrt_bindings.py``; placeholder ``libnvinfer`` built here with gcc) and reports which
   recorded names it lacks, and which recorded calls fit none of the method's signatures (read
   from pybind11's docstrings: number of arguments, keywords, str/int/bool arguments, and
   TensorRT objects of the right class). None may be missing or misfit.

TensorRT 8.5 (JetPack 5.1) has no bindings wheel on PyPI; its names are the 8.6 ones less what
8.6 added, which our code does not use (Polygraphy takes the same 8.5+ tensor API).
"""

from __future__ import annotations

import ast
import contextlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tensorrt_bindings as bindings  # noqa: E402
from runtime_models import CLASSES, make_onnx  # noqa: E402
from trt_standin import StandIn  # noqa: E402

from wbc_edge.errors import UserError  # noqa: E402
from wbc_edge.model.tensorrt_versions import features, parse_version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Every file that takes names from ``tensorrt``: the builder's decisions, its TensorRT calls,
# the implicit-INT8 calibrator, and the engine backend.
TRT_MODULES = [
    REPO / "export" / "tensorrt_build.py",
    REPO / "export" / "tensorrt_network.py",
    REPO / "export" / "tensorrt_calibrator.py",
    REPO / "wbc_edge" / "model" / "backends" / "tensorrt.py",
]


def _quiet(line: str) -> None:
    pass


Recording = tuple[set[tuple[str, str]], set[tuple]]


def _exercise(version: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Recording:
    """Run every builder and backend scenario at ``version``; the names our code touched and
    the calls it made (class, method, argument kinds, keywords)."""
    from export_phantoms import write_phantoms

    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.export import calib_cache, tensorrt_build
    from wbc_edge.model.backends import load_backend
    from wbc_edge.model.card import ModelCard, Preprocess, write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    onnx = make_onnx(folder / "m.onnx")
    rows = read_manifest(write_phantoms(folder / "data", {"train": 2}), "train")
    cache = calib_cache.write(folder / "c.cache", {"input": 1 / 127}, calib_cache.header(version))
    timing = folder / "timing.cache"
    used: set[tuple[str, str]] = set()
    calls: set[tuple] = set()

    def build(qdq: bool = False, standin: dict | None = None, **kw) -> None:
        trt = StandIn(version, **(standin or {})).install(monkeypatch)
        monkeypatch.setattr(tensorrt_build, "is_qdq", lambda path: qdq)
        kw.setdefault("force", True)
        # a version gate or a scenario's own failure stops it: the names before still count
        with contextlib.suppress(UserError):
            tensorrt_build.build_engine(onnx, folder / "m.engine", echo=_quiet, **kw)
        used.update(trt.used)
        calls.update(trt.signatures)

    for precision in ("fp32", "fp16"):
        build(precision=precision)
    build(qdq=True, precision="int8")
    build(qdq=True, precision="int8", dla_core=0, standin={"gpu_only_layers": ("/fc",)})
    build(qdq=True, precision="fp16", dla_core=1)
    build(precision="int8", calib_rows=rows)
    build(precision="int8", calib_cache_path=cache)
    timing.write_bytes(b"from another device")
    build(precision="fp32", timing_cache=timing, standin={"timing_cache_ok": False})
    build(precision="fp32", timing_cache=timing, standin={"timing_cache_back": False})
    build(precision="fp32", standin={"parse_ok": False})
    build(precision="fp32", standin={"build_ok": False})

    engine = folder / "run.engine"
    engine.write_bytes(b"ENGINE")
    card = ModelCard("colour", CLASSES, Preprocess(32))
    for dynamic, output, dla in ((True, "probs", None), (False, "logits", 0)):
        spec = {"size": 32, "classes": CLASSES, "max_batch": 4, "dynamic": dynamic}
        trt = StandIn(version, engine={**spec, "output": output}).install(monkeypatch)
        write_sidecar(engine, card, tensorrt_version=version, dla_core=dla)
        import numpy as np

        with load_backend(engine) as model:
            model.predict(np.zeros((5, 3, 32, 32), np.float32))
        used.update(trt.used)
        calls.update(trt.signatures)
    return used, calls


@pytest.fixture(scope="module")
def exercised(tmp_path_factory) -> dict[str, Recording]:
    mp = pytest.MonkeyPatch()
    try:
        folder = tmp_path_factory.mktemp("trt-names")
        return {v: _exercise(v, folder / v, mp) for v in bindings.WHEELS}
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def recorded(exercised) -> dict[str, set[tuple[str, str]]]:
    return {v: names for v, (names, _) in exercised.items()}


# -- what the source uses -------------------------------------------------------------------


def _chain(node: ast.AST) -> list[str]:
    """``self._runtime.deserialize_cuda_engine(x)[0]`` -> ["self", "_runtime", ...]."""
    names: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        elif isinstance(node, (ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        elif isinstance(node, ast.Name):
            names.append(node.id)
            return names[::-1]
        else:
            return []


class _TensorRTUses:
    """Attributes our code takes from values that come from ``tensorrt``, found by following
    assignments, loops and calls of the module's own functions (parameters of a function get
    tainted when a call passes it a TensorRT value) until nothing changes."""

    def __init__(self, path: Path) -> None:
        self.tree = ast.parse(path.read_text())
        self.functions: dict[str, ast.FunctionDef] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self.functions[f"{node.name}.{item.name}"] = item
            elif isinstance(node, ast.FunctionDef):
                self.functions.setdefault(node.name, node)
        self.tainted: dict[int, set[str]] = {id(f): {"trt"} for f in self.functions.values()}
        self.self_attrs: set[str] = set()
        self.names: dict[str, int] = {}  # attribute -> first line
        self.overrides: dict[str, set[str]] = {}  # TensorRT base class -> methods we define
        for _ in range(10):
            before = (sum(map(len, self.tainted.values())), len(self.self_attrs))
            for func in self.functions.values():
                self._scan(func)
            if before == (sum(map(len, self.tainted.values())), len(self.self_attrs)):
                break

    def _is_trt(self, node: ast.AST, local: set[str]) -> bool:
        if isinstance(node, (ast.GeneratorExp, ast.ListComp)):
            return self._is_trt(node.elt, local)
        chain = _chain(node)
        if not chain:
            return False
        if chain[0] == "self":
            return len(chain) > 1 and chain[1] in self.self_attrs
        return chain[0] in local

    def _mark(self, target: ast.AST, local: set[str]) -> None:
        if isinstance(target, ast.Name):
            local.add(target.id)
        elif isinstance(target, ast.Attribute) and _chain(target)[:1] == ["self"]:
            self.self_attrs.add(target.attr)

    def _params(self, callee: str) -> list[str]:
        func = self.functions.get(callee) or self.functions.get(f"{callee}.__init__")
        if func is None:
            return []
        names = [a.arg for a in func.args.args]
        return names[1:] if names[:1] == ["self"] else names

    def _scan(self, func: ast.FunctionDef) -> None:
        local = self.tainted[id(func)]
        for node in ast.walk(func):
            if isinstance(node, ast.FunctionDef) and node is not func and id(node) in self.tainted:
                self.tainted[id(node)] |= local  # closures see the enclosing function's values
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for t, v in zip(target.elts, node.value.elts, strict=False):
                            if self._is_trt(v, local):
                                self._mark(t, local)
                    elif self._is_trt(node.value, local):
                        self._mark(target, local)
            elif isinstance(node, (ast.For, ast.comprehension)):
                if self._is_trt(node.iter, local):
                    self._mark(node.target, local)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                params = self._params(node.func.id)
                callee = self.functions.get(node.func.id) or self.functions.get(
                    f"{node.func.id}.__init__"
                )
                if callee is None:
                    continue
                for name, arg in zip(params, node.args, strict=False):
                    if self._is_trt(arg, local):
                        self.tainted[id(callee)].add(name)
                for kw in node.keywords:
                    if kw.arg and self._is_trt(kw.value, local):
                        self.tainted[id(callee)].add(kw.arg)
            elif isinstance(node, ast.Attribute) and not node.attr.startswith("__"):
                if self._is_trt(node.value, local):
                    self.names.setdefault(node.attr, node.lineno)
            elif isinstance(node, ast.ClassDef):
                for base in node.bases:
                    if self._is_trt(base, local) and isinstance(base, ast.Attribute):
                        methods = {
                            item.name
                            for item in node.body
                            if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                        }
                        self.overrides.setdefault(base.attr, set()).update(methods)


@pytest.fixture(scope="module")
def source_uses() -> dict[Path, _TensorRTUses]:
    return {path: _TensorRTUses(path) for path in TRT_MODULES}


def _overrides(source_uses: dict[Path, _TensorRTUses]) -> dict[str, set[str]]:
    """TensorRT base class -> the methods our subclasses define, over every module."""
    merged: dict[str, set[str]] = {}
    for uses in source_uses.values():
        for base, methods in uses.overrides.items():
            merged.setdefault(base, set()).update(methods)
    return merged


def test_every_tensorrt_call_in_the_source_is_exercised(recorded, source_uses):
    """A TensorRT name in the source that no stand-in scenario reaches is not checked against
    NVIDIA's bindings; add a scenario to ``_exercise`` (and the name to the stand-in)."""
    exercised = {name for names in recorded.values() for _, name in names}
    unchecked = [
        f"{path.relative_to(REPO)}:{line} .{name}"
        for path, uses in source_uses.items()
        for name, line in uses.names.items()
        if name not in exercised
    ]
    assert not unchecked, "TensorRT names no scenario exercises:\n" + "\n".join(unchecked)
    # the reader finds what it must: calls on builder, config, engine and context objects
    found = set().union(*(u.names for u in source_uses.values()))
    for name in ("create_network", "set_flag", "parse_from_file", "execute_async_v3", "DLA_core"):
        assert name in found
    overrides = _overrides(source_uses)
    assert overrides.get("IInt8EntropyCalibrator2", set()) >= {"get_batch", "get_batch_size"}


@pytest.fixture(scope="module")
def placeholders(tmp_path_factory) -> dict[int, Path]:
    try:
        return {
            m: bindings.build_placeholders(tmp_path_factory.mktemp(f"libs{m}"), m)
            for m in {parse_version(v)[0] for v in bindings.WHEELS}
        }
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the placeholder TensorRT libraries: {exc}")


def _real_bindings(version: str) -> None:
    reason = bindings.fetch(version)
    if reason is not None:
        pytest.skip(f"NVIDIA's TensorRT {version} bindings cannot be obtained here: {reason}")


@pytest.mark.parametrize("version", list(bindings.WHEELS))
def test_names_exist_in_nvidia_bindings(version, exercised, source_uses, placeholders):
    _real_bindings(version)
    names, calls = set(exercised[version][0]), exercised[version][1]
    feats = features(version)
    if feats.implicit_int8:  # the calibrator methods TensorRT calls back must be its names
        for base, methods in _overrides(source_uses).items():
            names |= {(base, m) for m in methods}
    libs = placeholders[parse_version(version)[0]]
    report = bindings.check(version, libs, sorted(names), [list(c) for c in calls])
    assert report["version"] == version
    assert not report["missing"], (
        f"TensorRT {version} lacks what our code uses there: {report['missing']}"
    )
    # every call fits one of the method's signatures (arity, keywords, str/int/bool arguments)
    assert not report["bad_calls"], (
        f"calls TensorRT {version} does not accept: {report['bad_calls']}"
    )
    assert not report["unparsed"], f"signatures not read from the docstrings: {report['unparsed']}"
    assert len(calls) >= 20  # the calls were really recorded
    # the check can fail: names the code must keep away from this version are really absent
    absent = {"8.6.1": [], "10.3.0": [("ICudaEngine", "num_bindings")]}.get(
        version, [("BuilderFlag", "FP16"), ("IBuilderConfig", "int8_calibrator")]
    )
    if absent:
        back = bindings.check(version, libs, absent)["missing"]
        assert [tuple(m) for m in back] == absent
    # and the version gates match the version's real API
    if not feats.precision_flags:
        assert ("BuilderFlag", "FP16") not in names and ("BuilderFlag", "INT8") not in names
    if not feats.explicit_batch_flag:
        assert ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH") not in names
