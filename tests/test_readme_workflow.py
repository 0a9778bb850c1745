"""The documented workflow, run as written on phantoms: the ML engineer's block
(docs/ml-engineer.md) and then the technologist's (docs/technologist.md), every step's output
the next step's input, so the names the CLI writes are the names the docs use.

Kept fast: tiny images, one epoch, few calibration images, two timed calls; each command gets
only options that shrink its work (appended, so they win over the documented values). The one
step a CPU cannot do as written: ``build-engine`` runs against the TensorRT stand-in, and the
camera line checks that the engine it names exists (there is no camera and no GPU here).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the workflow trains: it needs the train extra")

from trt_standin import StandIn  # noqa: E402

from wbc_edge import cli  # noqa: E402
from wbc_edge.data.import_pbc import IG_PREFIXES, PBC_CLASSES, PBC_SUBDIR  # noqa: E402
from wbc_edge.model.backends.onnxruntime import read_onnx_card  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# (page, section): their first ```bash blocks, run in this order.
BLOCKS = [
    (REPO / "docs" / "ml-engineer.md", "## The workflow with real data"),
    (REPO / "docs" / "technologist.md", "## Running a slide"),
]

# Work-shrinking options per command (the first words after `wbc-edge`).
SMALL = {
    "train-teacher": ["--size", "32", "--epochs", "1", "--batch-size", "16"],
    "distill": ["--epochs", "1", "--batch-size", "16"],
    "ablation": ["--methods", "kd", "--seeds", "0", "--epochs", "1", "--batch-size", "16"],
    "export int8": ["--num", "18"],
    "bench": ["--batch", "1", "--warmup", "0", "--iters", "2", "--limit", "9"],
    "run": ["--no-live"],
}
CACHED = ("train-teacher", "distill", "ablation")  # keep their caches in the test folder


def workflow_commands(blocks: list[tuple[Path, str]] = BLOCKS) -> list[list[str]]:
    """The ``wbc-edge ...`` lines of the documented workflow blocks, comments dropped."""
    commands = []
    for page, section in blocks:
        text = page.read_text()
        block = text[text.index(section) :]
        block = block[block.index("```bash\n") + 8 :]
        block = block[: block.index("```")]
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                assert words[0] == "wbc-edge", line
                commands.append(words[1:])
    return commands


def _key(argv: list[str]) -> str:
    return " ".join(argv[:2]) if argv[0] in ("export", "data") else argv[0]


def _pbc_download(root: Path) -> Path:
    """A folder laid out like the PBC download, holding phantom cells."""
    from wbc_edge.data.synth import make_crops

    crops = root / "phantoms"
    make_crops(crops, per_class=10, size=40, seed=0, show_progress=False)
    pbc = root / PBC_SUBDIR
    folder_of = {cls: folder for folder, cls in PBC_CLASSES.items() if cls}
    prefix_of = {cls: prefix for prefix, cls in IG_PREFIXES.items()}
    for cls_dir in sorted(p for p in crops.iterdir() if p.is_dir()):
        cls = cls_dir.name
        if cls not in folder_of and cls not in prefix_of:
            continue  # a phantom class PBC does not have (Blast)
        target = pbc / folder_of.get(cls, "ig")
        target.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(sorted(cls_dir.glob("*.jpg"))):
            name = f"{prefix_of[cls]}_{i}.jpg" if cls in prefix_of else f"{cls[:2].upper()}_{i}.jpg"
            shutil.copyfile(img, target / name)
    return pbc


@pytest.mark.slow  # ~1 min on a quiet 2-core machine, 11 on this shared one (load 15)
def test_the_readme_workflow_runs_on_phantoms(tmp_path, monkeypatch, capsys):
    commands = workflow_commands()
    assert len(commands) >= 15
    monkeypatch.chdir(tmp_path)
    _pbc_download(tmp_path)
    for argv in commands:
        key = _key(argv)
        if "--camera" in argv:  # no camera, no GPU: the engine it names must exist
            assert Path(argv[argv.index("--model") + 1]).is_file(), argv
            continue
        if argv[0] == "run":  # new cells to classify: the phantom test split's images
            source = Path(argv[1])
            source.mkdir(parents=True, exist_ok=True)
            for img in sorted(Path("data/pbc9/Neutrophil").glob("*.jpg"))[:3]:
                shutil.copyfile(img, source / img.name)
        if key == "review":  # a server that waits for a person: tests/test_runtime_review.py
            continue
        if key == "calibrate":  # "older models only": one of this workflow's checkpoints
            argv = [a if a != "old.pt" else "runs/teacher/best.pt" for a in argv]
        extra = SMALL.get(key, [])
        if key in CACHED:
            extra = [*extra, "--cache-dir", "cache"]
        with monkeypatch.context() as m:
            if key == "build-engine":  # torch must not see the stand-in: only for this step
                StandIn("10.3.0").install(m)
            code = cli.run([*argv, *extra])
        assert code == 0, f"wbc-edge {shlex.join(argv)}: {capsys.readouterr().err[-2000:]}"

    student = Path("runs/student/student-tinyresnet_xs.onnx")
    assert read_onnx_card(student).extra["role"] == "student"
    for suffix in (".int8-tensorrt.onnx", ".int8-cpu.onnx", ".calib.cache", ".int8.engine"):
        assert (student.parent / f"student-tinyresnet_xs{suffix}").is_file(), suffix
    assert (Path("triton-repo") / "student-tinyresnet_xs" / "config.pbtxt").is_file()
    assert Path("bench-out/teacher-tf_efficientnet_lite0.onnx").is_file()
    assert Path("report.html").is_file()


def _opt(argv: list[str], name: str, default: str | None = None) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else default


def test_every_path_the_readme_reads_is_one_an_earlier_step_writes():
    """Fast (the run above is slow): the documented steps through the CLI's own default-path
    functions, on the cards each step's model would carry."""
    from wbc_edge.export.engine_cache import default_engine_path
    from wbc_edge.export.int8 import default_cache, default_out
    from wbc_edge.export.onnx_export import default_onnx_path
    from wbc_edge.model.card import ModelCard
    from wbc_edge.model.names import triton_name

    def card(role: str, arch: str, **extra: object) -> ModelCard:
        return ModelCard(arch, ["a", "b"], extra={"role": role, **extra})

    written: dict[str, ModelCard | None] = {}

    def reads(*paths: str | None) -> None:
        for p in paths:
            if p is not None and p not in ("PBC_dataset_normal_DIB", "old.pt", "data/new-cells"):
                assert p in written, f"{p} is read before any step writes it"

    for argv in workflow_commands():
        key = _key(argv)
        if key == "data import-pbc":
            written[_opt(argv, "--out")] = None
        elif key in ("data check", "data split"):
            reads(argv[2])
            if key == "data split":
                written[_opt(argv, "--out")] = None
        elif key == "train-teacher":
            reads(_opt(argv, "--data"))
            arch = _opt(argv, "--model", "tf_efficientnet_lite0")
            written[f"{_opt(argv, '--out')}/best.pt"] = card("teacher", arch)
        elif key == "distill":
            reads(_opt(argv, "--data"), _opt(argv, "--teacher"))
            arch = _opt(argv, "--student", "tinyresnet_xs")  # distill's default student
            written[f"{_opt(argv, '--out')}/best.pt"] = card("student", arch)
        elif key in ("ablation", "calibrate", "evaluate"):
            reads(_opt(argv, "--data"), _opt(argv, "--teacher"), _opt(argv, "--model"))
        elif key == "export onnx":
            reads(_opt(argv, "--model"), _opt(argv, "--data"))
            c = written[_opt(argv, "--model")]
            out = _opt(argv, "--out") or str(default_onnx_path(Path(_opt(argv, "--model")), c))
            written[out] = card(c.extra["role"], c.architecture, format="onnx", precision="fp32")
        elif key == "export int8":
            onnx, target = _opt(argv, "--model"), _opt(argv, "--target", "tensorrt")
            reads(onnx, _opt(argv, "--calib"))
            c = written[onnx]
            written[str(default_out(Path(onnx), c, target))] = card(
                c.extra["role"], c.architecture, format="onnx", precision="int8", int8_target=target
            )
            written[str(default_cache(Path(onnx), c))] = None
        elif key == "export triton":
            reads(_opt(argv, "--model"))
            name = triton_name(written[_opt(argv, "--model")])
            written[f"{_opt(argv, '--out')}/{name}/config.pbtxt"] = None
        elif key == "build-engine":
            onnx = _opt(argv, "--model")
            reads(onnx)
            c = written[onnx]
            precision = _opt(
                argv, "--precision", "int8" if c.extra["precision"] == "int8" else "fp16"
            )
            written[str(default_engine_path(Path(onnx), c, precision))] = c
        elif key == "info":
            reads(_opt(argv, "--model"))
        elif key == "run":
            reads(_opt(argv, "--model"))
            if "--sample" in argv:  # the run's sample folder, which review and report read
                written[f"{_opt(argv, '--out', 'wbc-run')}/{_opt(argv, '--sample')}"] = None
        elif key in ("review", "report"):
            reads(argv[1])
        elif key == "bench":
            reads(_opt(argv, "--model"), _opt(argv, "--teacher"), _opt(argv, "--data"))
        else:
            raise AssertionError(f"the docs run a command this test does not know: {argv}")
    assert "runs/student/student-tinyresnet_xs.int8.engine" in written


def _bash_lines(page: Path) -> list[str]:
    text, lines = page.read_text(), []
    while "```bash\n" in text:
        text = text[text.index("```bash\n") + 8 :]
        lines += text[: text.index("```")].replace("\\\n", " ").splitlines()
        text = text[text.index("```") + 3 :]
    return lines


def test_every_documented_command_line_parses():
    """Every `wbc-edge`, `make` and `pip install` line of the README and docs/ names options,
    targets and files that exist: click parses each command line (nothing runs), so a renamed
    option cannot linger on a page."""
    import tomllib
    import typer.main

    root = typer.main.get_command(cli.app)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    targets = {line.split(":")[0] for line in (REPO / "Makefile").read_text().splitlines()}
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    seen = 0
    for page in pages:
        for line in _bash_lines(page):
            words = shlex.split(line, comments=True)
            if "wbc-edge" in words:
                argv = cli.rename_old_spellings(words[words.index("wbc-edge") + 1 :])
                command, name = root, "wbc-edge"
                while hasattr(command, "commands") and argv and argv[0] in command.commands:
                    name, command, argv = f"{name} {argv[0]}", command.commands[argv[0]], argv[1:]
                assert not hasattr(command, "commands"), f"{page.name}: {line}"
                command.make_context(name, list(argv))  # raises on an unknown or missing option
                seen += 1
            elif words[:1] == ["make"]:
                assert words[1] in targets, f"{page.name}: {line}"
            elif words[:2] == ["pip", "install"] and ".whl" in line:
                assert f"wbc_edge-{version}-py3-none-any.whl" in line, f"{page.name}: {line}"
    assert seen >= 25
