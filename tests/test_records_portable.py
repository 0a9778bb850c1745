"""Committed records name no folder of the machine that made them (issue 30): a reader must be
able to rerun a record's command from a checkout, so paths are repository-relative
(``runs/...``, ``../shared/data/...``) or named by role."""

from __future__ import annotations

import re
from pathlib import Path

from wbc_edge.records import machine_line, portable_path, record_header

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# Absolute folders of a build machine: /work/..., /tmp/..., /home/..., /root/..., /Users/...
MACHINE_PATH = re.compile(r"(?<![\w.$<>/-])/(?:work|tmp|home|root|Users|mnt|scratch)/[\w.-]")


def test_no_committed_record_holds_a_machine_path() -> None:
    offenders = []
    for path in sorted(RESULTS.rglob("*")):
        if path.suffix not in (".md", ".json", ".csv") or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{path.relative_to(RESULTS)}:{n}: {line.strip()[:120]}")
                break
    assert not offenders, "records with machine paths:\n" + "\n".join(offenders)


def test_portable_path_is_relative_inside_and_beside_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "runs" / "r").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert portable_path(repo / "runs" / "r" / "best.pt", repo) == "runs/r/best.pt"
    assert portable_path(tmp_path / "shared" / "data", repo) == "../shared/data"
    assert portable_path("/opt/elsewhere/model.onnx", repo) == "/opt/elsewhere/model.onnx"


def test_one_header_names_date_command_and_machine() -> None:
    head = record_header("wbc-edge bench")
    assert set(head) == {"date", "command", "machine"}
    assert head["command"] == "wbc-edge bench" and head["date"].endswith(" UTC")
    assert head["machine"] == machine_line()  # the one machine description, GPU detected
