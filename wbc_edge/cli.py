"""The ``wbc-edge`` command: one typer app joining every part's command group.

Each part registers its commands from its own ``cli`` module. Those modules import only typer at
module level (heavy packages load inside the commands), so ``wbc-edge --help`` and a
runtime-only install work without torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Annotated

import click
import typer
from rich.markup import escape

from wbc_edge.console import console
from wbc_edge.errors import UserError
from wbc_edge.optional import missing_extra_error

try:  # typer >= 0.20 runs on its own copy of click, whose exceptions are other classes
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - an older typer on plain click
    _typer_click = click.exceptions

_CLICK_ERROR = (click.ClickException, _typer_click.ClickException)
_CLICK_EXIT = (click.exceptions.Exit, typer.Exit)
_CLICK_ABORT = (click.exceptions.Abort, typer.Abort)

app = typer.Typer(
    name="wbc-edge",
    help="White-blood-cell classification on the edge: data, training, distillation, export, "
    "streaming inference and benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Click's plain help: every flag shown as `--smear / --crops` (typer's rich panels print
    # `<bool>` beside each flag and cut long lines in a log).
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from wbc_edge import __version__

        typer.echo(f"wbc-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when a command fails.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """wbc-edge: white-blood-cell classification on the edge."""


def _register() -> None:
    from wbc_edge.benchmarks.cli import register as register_bench
    from wbc_edge.data.cli import app as data_app
    from wbc_edge.export.cli import register as register_export
    from wbc_edge.kd.cli import register as register_kd
    from wbc_edge.runtime.cli import register as register_runtime

    app.add_typer(data_app, name="data", help="Check, split, import and synthesise image data.")
    register_kd(app)
    register_export(app)
    register_runtime(app)
    register_bench(app)

    from wbc_edge.runtime.info import info

    app.command("info")(info)

    from wbc_edge.demo import demo

    app.command("demo", help="Run the whole pipeline offline on phantoms (or --data DIR).")(demo)


_register()


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (systemd's stop, ``docker stop``) does what Ctrl-C does: a run stops capturing,
    drains what it has, writes its summary and report, and exits 0. Without this Python dies
    at once with 143 and nothing after the last record is written."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code instead of exiting.

    User errors print one line; other failures print one line too and point at ``--debug``,
    which (anywhere on the line, or WBC_EDGE_DEBUG=1) re-raises with the traceback. Usage
    errors (a bad value, a missing or unknown option, an unknown command) show click's usage
    line and the option at fault and exit 2, for every command: this is the one place they are
    handled. SIGTERM is handled like Ctrl-C (:func:`sigterm_as_ctrl_c`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("WBC_EDGE_DEBUG") == "1"
    args = rename_old_spellings([a for a in args if a != "--debug"])
    with sigterm_as_ctrl_c():
        return _run(args, debug)


# Every command names the model it runs with --model (Ultralytics' one `model=`). The spellings
# before 0.1.0 still work for one release, shown in no --help: the line is rewritten before
# click parses it, so each command declares --model alone (and click marks it required).
# bench keeps --teacher (and --baseline, --reference) beside --model: those name the model the
# measured ones are compared with, a role as in `distill --teacher`, not the model measured.
OLD_SPELLINGS: dict[tuple[str, ...], dict[str, str]] = {
    ("export", "int8"): {"--onnx": "--model"},
    ("export", "int8-sweep"): {"--onnx": "--model"},
    ("build-engine",): {"--onnx": "--model"},
    ("bench",): {"--student": "--model"},
    ("info",): {"MODEL": "--model"},  # `wbc-edge info PATH`: the positional path
}


def rename_old_spellings(args: list[str]) -> list[str]:
    """``args`` with an old spelling (:data:`OLD_SPELLINGS`) replaced by the new one, and a note
    on stderr saying so; everything else untouched."""
    command = tuple(args[:2]) if tuple(args[:2]) in OLD_SPELLINGS else tuple(args[:1])
    renames = OLD_SPELLINGS.get(command, {})
    if not renames or "--help" in args:
        return args
    rest = args[len(command) :]
    named = any(a in ("--model", "-m") or a.startswith("--model=") for a in rest)
    out: list[str] = []
    for arg in rest:
        name, eq, value = arg.partition("=")
        new = renames.get(name) if arg.startswith("--") else None
        if new is None and "MODEL" in renames and not named and not arg.startswith("-"):
            new, name, eq, value, named = "--model", "the path alone", "=", arg, True
        if new is None:
            out.append(arg)
            continue
        console.print(
            f"note: `wbc-edge {' '.join(command)}` takes the model as {new} now ({name} still "
            "works in this release only)",
            highlight=False,
            soft_wrap=True,
        )
        out.append(f"{new}={value}" if eq else new)
    return [*command, *out]


def _run(args: list[str], debug: bool) -> int:
    try:
        result = app(args=args, prog_name="wbc-edge", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except _CLICK_EXIT as exc:
        return exc.exit_code
    except _CLICK_ERROR as exc:
        if getattr(exc, "ctx", False) is None:  # raised before click made the context
            _usage_line(args)
        exc.show()  # "Usage: wbc-edge run ...", "Try ... --help", "Error: ... '--batch' ..."
        return exc.exit_code
    except (*_CLICK_ABORT, KeyboardInterrupt):
        console.print("aborted")
        return 130
    except Exception as exc:
        if debug:
            raise
        known = missing_extra_error(exc) if isinstance(exc, ModuleNotFoundError) else None
        if known is not None:  # e.g. train-teacher on a runtime-only install: which extra
            console.print(
                f"[bold red]error:[/] {escape(str(known))}", highlight=False, soft_wrap=True
            )
            return known.exit_code
        console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return result if isinstance(result, int) else 0


def _usage_line(args: list[str]) -> None:
    """The usage line click prints with a context, for the errors it raises without one."""
    import typer.main

    group = typer.main.get_command(app)
    names = getattr(group, "commands", {})
    command = args[0] if args and args[0] in names else ""
    sub = names.get(command)
    if sub is not None and hasattr(sub, "commands") and len(args) > 1 and args[1] in sub.commands:
        command = f"{command} {args[1]}"
    prog = f"wbc-edge {command}".strip()
    print(f"Usage: {prog} [OPTIONS] ...\nTry '{prog} --help' for help.\n", file=sys.stderr)


def main() -> None:
    sys.exit(run())
