"""CLI (layer 9): the typer app; wires the layers and imports a command's implementation inside the command.

May import: everything.
"""
from crt_bench.cli.app import main

__all__ = ["main"]
