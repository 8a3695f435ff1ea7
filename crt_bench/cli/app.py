"""The ``crt-bench`` command line: run, certify, summary, import-log, export-log, list, leaderboard, sweep,
chain, time, plot, proxy, reproduce (``crt-bench COMMAND --help`` for each)."""
from __future__ import annotations

import sys

import typer
from rich.markup import escape

from crt_bench import methods as _methods  # noqa: F401  (registers methods)
from crt_bench import models as _archs  # noqa: F401  (registers architectures)
from crt_bench.cli import cmd_certify, cmd_grid, cmd_list, cmd_results, cmd_train
from crt_bench.cli.output import err, out
from crt_bench.cli.render import method_defaults_table
from crt_bench.core.errors import CrtBenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure what it costs to make an architecture certifiably robust (randomized smoothing).")

app.command()(cmd_train.run)
app.command()(cmd_certify.certify)
app.command()(cmd_results.summary)
app.command("import-log")(cmd_certify.import_log_cmd)
app.command()(cmd_results.leaderboard)
app.command("export-log")(cmd_certify.export_log_cmd)
app.command("list")(cmd_list.list_cmd)
app.command()(cmd_grid.sweep)
app.command()(cmd_grid.chain)
app.command("time")(cmd_grid.time_cmd)
app.command()(cmd_results.plot)
app.command("proxy")(cmd_train.proxy_cmd)
app.command()(cmd_grid.reproduce)
app.command()(cmd_results.compact)


def _print_method_help(args: list[str]) -> None:
    """`crt-bench run --method M --help` shows M's defaults before the generic option list."""
    if not args or args[0] != "run" or not ({"--help", "-h"} & set(args)):
        return
    method = None
    for i, arg in enumerate(args):
        if arg == "--method" and i + 1 < len(args):
            method = args[i + 1]
        elif arg.startswith("--method="):
            method = arg.split("=", 1)[1]
    if method:
        out.print(method_defaults_table(method))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit status 2 (1: disk full)."""
    try:
        _print_method_help(sys.argv[1:] if argv is None else argv)
        app(args=argv, prog_name="crt-bench")
    except CrtBenchError as e:
        # One line however long (soft_wrap, line breaks joined); escape: the message is text, not rich markup.
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as stop:
        from crt_bench.core.signals import exit_status

        if getattr(stop, "reported", False):  # the run or certification already said how to continue
            sys.exit(exit_status(stop))
        err.print("interrupted; finished epochs are checkpointed (resume with `crt-bench run --resume RUN_ID`)")
        sys.exit(130)

