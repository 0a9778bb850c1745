"""Run ``wbc-edge`` as if only some extras were installed: ``python only_extras.py runtime,jetson
-- build-engine --model m.onnx``.

The allowed distributions are what pyproject.toml declares for wbc-edge itself and the named
extras, with their own requirements followed through the installed metadata. Importing a module
that belongs to any other installed distribution (torch, timm, matplotlib, ...) raises
ModuleNotFoundError, as it would on a device that installed only those extras. The test
environment has everything, so this is how a test sees what a Jetson install lacks.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata as md
import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_distributions(extras: set[str]) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
    allowed: set[str] = set()
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in allowed:
            continue
        allowed.add(name)
        try:
            requires = md.distribution(req.name).requires or []
        except md.PackageNotFoundError:
            continue  # declared but not installed here (pycuda): nothing of it can be imported
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return allowed


def blocked_modules(extras: set[str]) -> set[str]:
    """Top-level modules of installed distributions outside the allowed ones."""
    allowed = allowed_distributions(extras)
    blocked = set()
    for module, dists in md.packages_distributions().items():
        if not any(_norm(d) in allowed for d in dists) and module not in sys.stdlib_module_names:
            blocked.add(module)
    blocked.discard("wbc_edge")
    return blocked


class _Block(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked
        self.refused: list[str] = []

    def find_spec(self, name, path, target=None):  # noqa: ANN001 (importlib's signature)
        if name.split(".")[0] in self.blocked:
            self.refused.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (not in these extras)")
        return None


def main(argv: list[str]) -> int:
    extras, _, args = argv[0], argv[1], argv[2:]
    block = _Block(blocked_modules(set(extras.split(","))))
    sys.meta_path.insert(0, block)
    from wbc_edge import cli

    code = cli.run(args)
    print(f"REFUSED {sorted({m.split('.')[0] for m in block.refused})}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
