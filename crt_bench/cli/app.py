"""The ``crt-bench`` command line.

Commands: run, proxy (train); certify, recertify, import-log, export-log (certifications); summary, leaderboard, plot,
compact (read or tidy the results); list (registries); sweep, chain, time, reproduce (grids); status (a grid
as the store and the scheduler see it).

Start-up reads only the torch-free catalogues (methods, architectures, datasets, profiles): each command
imports its implementation inside itself, so ``--help``, ``list`` and bad input answer at once.
Exit status: 0 done; 1 jobs of a grid failed (:class:`~crt_bench.core.errors.JobsFailed`) or the disk is
full (:class:`~crt_bench.core.errors.DiskFull`); 2 bad input (a usage error, or any other
:class:`~crt_bench.core.errors.CrtBenchError`); 130 interrupted.
"""
from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from crt_bench import __version__
from crt_bench import methods as _methods  # noqa: F401  (registers the methods: torch-free)
from crt_bench import models as _archs  # noqa: F401  (registers the architectures: torch-free)
from crt_bench.cli import cmd_certify, cmd_grid, cmd_list, cmd_results, cmd_status, cmd_train
from crt_bench.cli.options import plain_values
from crt_bench.cli.output import err, out
from crt_bench.core.errors import CrtBenchError, exit_code
from crt_bench.core.logs import setup_logging

# Click's exception classes, wherever this typer takes click from (its own copy since typer 0.23, else click).
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Measure what it costs to make an architecture certifiably robust (randomized smoothing).")


def _version(value: bool) -> None:
    if value:
        print(f"crt-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="debug lines too")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and errors on stderr")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Measure what it costs to make an architecture certifiably robust (randomized smoothing)."""
    setup_logging(-1 if quiet else verbose)


app.command()(plain_values(cmd_train.run))
app.command()(plain_values(cmd_certify.certify))
app.command("recertify")(plain_values(cmd_certify.recertify_cmd))
app.command()(plain_values(cmd_results.summary))
app.command("import-log")(plain_values(cmd_certify.import_log_cmd))
app.command()(plain_values(cmd_results.leaderboard))
app.command("export-log")(plain_values(cmd_certify.export_log_cmd))
app.command("list")(plain_values(cmd_list.list_cmd))
app.command()(plain_values(cmd_grid.sweep))
app.command()(plain_values(cmd_grid.chain))
app.command("time")(plain_values(cmd_grid.time_cmd))
app.command()(plain_values(cmd_results.plot))
app.command("proxy")(plain_values(cmd_train.proxy_cmd))
app.command()(plain_values(cmd_grid.reproduce))
app.command()(plain_values(cmd_results.compact))
app.command()(plain_values(cmd_status.status))


def _print_method_help(args: list[str]) -> None:
    """`crt-bench run --method M --help` shows M's defaults before the generic option list."""
    if "run" not in args or not ({"--help", "-h"} & set(args)):
        return
    method = None
    for i, arg in enumerate(args):
        if arg == "--method" and i + 1 < len(args):
            method = args[i + 1]
        elif arg.startswith("--method="):
            method = arg.split("=", 1)[1]
    if method:
        out.print(cmd_list.method_defaults_table(method))


def _error(message: str, code: int) -> None:
    """One line on stderr however long the message (line breaks joined), printed as written, then exit."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    err.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
    sys.exit(code)


def _given(args: list[str], param: object) -> str | None:
    """The value given on the command line for option ``param`` (its last occurrence), if any."""
    value = None
    for opt in getattr(param, "opts", ()):
        for i, arg in enumerate(args):
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(opt + "="):
                value = arg.split("=", 1)[1]
    return value


def main(argv: list[str] | None = None) -> None:
    """Console entry point: bad input is one ``error:`` line and exit status 2 (see the module docstring)."""
    args = sys.argv[1:] if argv is None else list(argv)
    setup_logging(-1 if {"-q", "--quiet"} & set(args[:1]) else 0)  # before the callback, for errors it never sees
    try:
        _print_method_help(args)
        code = app(args=args, prog_name="crt-bench", standalone_mode=False)
    except UsageError as e:  # unknown option, bad choice or number, missing argument: at parse time
        where = f" (crt-bench {e.ctx.info_name} --help)" if e.ctx is not None and e.ctx.parent is not None else ""
        message = e.format_message().replace("Value error, ", "")  # typer >= 0.23 words pydantic's errors
        given = _given(args, getattr(e, "param", None))
        if given is not None and repr(given) not in message and f" {given} " not in message:
            message += f" (got {given!r})"
        _error(message + where, 2)
    except ClickException as e:
        _error(e.format_message(), e.exit_code)
    except typer.Abort:
        _error("aborted", 130)
    except CrtBenchError as e:
        _error(str(e), exit_code(e))
    except KeyboardInterrupt as stop:
        from crt_bench.core.signals import exit_status

        if getattr(stop, "reported", False):  # the run or certification already said how to continue
            sys.exit(exit_status(stop))
        err.print("interrupted; finished epochs are checkpointed (resume with `crt-bench run --resume RUN_ID`)")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode: the entry point always exits
