"""CLI commands over a sample folder: ``wbc-edge report`` and ``wbc-edge review``.

Only typer, the standard library and the stdlib-only defaults of :mod:`wbc_edge.runtime.options`
at module level (``--help`` shows them); everything else loads inside the commands. The flag
options are ``wbc-edge run``'s, built from the same declaration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wbc_edge.runtime.cli_options import cli_param
from wbc_edge.runtime.options import REPORT_PER_CLASS, REVIEW_HOST, REVIEW_PORT

SampleArg = Annotated[
    Path, typer.Argument(help="A sample folder written by `wbc-edge run` (OUT/<sample>).")
]
# The flag thresholds are run options (runtime/options.py, LabOptions): the same declaration,
# help and ranges here, where `report` and `review` re-evaluate a sample's flags.
FlagIg = cli_param("lab.flag_ig").annotation()
FlagBlasts = cli_param("lab.flag_blasts").annotation()
FlagNrbc = cli_param("lab.flag_nrbc").annotation()


def flag_rules(base: Any, ig: float | None, blasts: int | None, nrbc: float | None) -> Any:
    """``base`` (a :class:`~wbc_edge.runtime.flags.FlagRules`) with the thresholds given."""
    from dataclasses import replace

    from wbc_edge.errors import UserError

    changes = {"ig_percent": ig, "blasts": blasts, "nrbc_per_100_wbc": nrbc}
    try:
        return replace(base, **{k: v for k, v in changes.items() if v is not None})
    except ValueError as exc:
        raise UserError(f"--flag-ig, --flag-blasts and --flag-nrbc: {exc}") from exc


def report(
    sample: SampleArg,
    out: Annotated[
        Path | None, typer.Option(help="Where to write it [default: SAMPLE/report.html].")
    ] = None,
    per_class: Annotated[int, typer.Option(help="Most cells shown per class.")] = REPORT_PER_CLASS,
    flag_ig: FlagIg = None,
    flag_blasts: FlagBlasts = None,
    flag_nrbc: FlagNrbc = None,
) -> None:
    """Rebuild a sample's HTML report (gallery, flags, differential, fields) from its folder."""
    from wbc_edge.console import console
    from wbc_edge.runtime.flags import FlagRules
    from wbc_edge.runtime.report import write_report
    from wbc_edge.runtime.sample import SampleFolder
    from wbc_edge.runtime.sinks import report_target

    folder = SampleFolder.open(sample)
    out = report_target(out, "--out") if out is not None else None
    recorded = FlagRules.from_dict(folder.header().get("lab", {}).get("flags"))
    rules = flag_rules(recorded, flag_ig, flag_blasts, flag_nrbc)
    path = write_report(folder, out, rules=rules, per_class=per_class)
    console.print(f"report written to {path}", highlight=False)


def review(
    sample: SampleArg,
    host: Annotated[
        str,
        typer.Option(
            help="Interface to serve on; 0.0.0.0 (or this machine's address) lets a desktop PC "
            "on the lab network review, through the link printed (it carries a secret token)."
        ),
    ] = REVIEW_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port (0: any free one).")
    ] = REVIEW_PORT,
    operator: Annotated[
        str | None,
        typer.Option(
            help="Who reviews: recorded with every correction, with its time and the "
            "reviewing PC's address [default: the login name].",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Do not serve: export the confirmed cells' crops to this folder "
            "(one folder per class, for `wbc-edge adapt`) and exit."
        ),
    ] = None,
) -> None:
    """Serve a sample in the browser to confirm or reclassify its cells from the keyboard."""
    from wbc_edge.console import console
    from wbc_edge.errors import UserError
    from wbc_edge.runtime.corrections import export_labelled
    from wbc_edge.runtime.review import Review, ReviewServer
    from wbc_edge.runtime.sample import SampleFolder

    folder = SampleFolder.open(sample)
    if export is not None:
        dest, counts = export_labelled(folder, export)
        if not counts:
            console.print(
                f"nothing exported to {dest}: no cell of {folder.path} is confirmed as a cell "
                f"class yet (confirm or reclassify cells first: wbc-edge review {folder.path}; "
                "artefacts are never exported)",
                highlight=False,
            )
            return
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        console.print(f"exported to {dest}: {shown}", highlight=False)
        return
    if operator is None:
        import getpass

        operator = getpass.getuser()
    try:
        server = ReviewServer(Review(folder, operator), host, port)
    except OSError as exc:
        raise UserError(f"cannot serve on {host}:{port} ({exc}): try another --port") from exc
    console.print(
        f"reviewing {folder.path} as operator {operator!r} (Ctrl-C to stop; every change is "
        f"saved to {folder.corrections_path.name} at once, with the operator, time and address)",
        highlight=False,
        soft_wrap=True,
    )
    if not server.loopback:
        console.print(
            f"[yellow]serving on {host}[/]: open the link below from the reviewing PC; it "
            "carries this session's secret token, so share it with the reviewer only",
            highlight=False,
            soft_wrap=True,
        )
    for url in server.urls():
        console.print(f"  {url}", highlight=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    console.print("review stopped")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("review")(review)
