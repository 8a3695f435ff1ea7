"""SIGTERM and SIGINT during ``run`` / ``certify``: stop cleanly, record it, say how to continue.

SLURM (time limit, preemption), ``kill`` and schedulers send SIGTERM; Python's default for it is to
die on the spot, which left a run marked "running" forever and printed nothing.  Inside
:func:`stop_on_signals` both signals raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the main
thread, so the training loop and the certification driver take the path Ctrl-C already takes: the
current epoch (or group of images) is abandoned, the last checkpoint (or the certified rows) stays,
the run or certification is marked ``interrupted``, one line says how to continue, and the process
exits with ``128 + signal``.  A second signal during that clean-up gets the default action (SIGTERM
kills, Ctrl-C raises a plain ``KeyboardInterrupt``): a user who insists is obeyed.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """A stop request by signal; ``signum`` says which. ``reported`` is set once the user was told."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum
        self.reported = False


def exit_status(stop: BaseException) -> int:
    """``128 + signal number`` (143 for SIGTERM, 130 for Ctrl-C)."""
    return 128 + int(getattr(stop, "signum", signal.SIGINT))


@contextlib.contextmanager
def stop_on_signals(hint: str) -> Iterator[None]:
    """For a CLI command: SIGTERM and SIGINT raise :class:`Interrupted` once inside the block; it leaves
    as ``SystemExit(128 + signal)`` after printing ``hint`` to stderr unless the run or certification
    already said how to continue (``reported``).  Handlers are restored after.

    Exiting here rather than in ``main``: typer turns any KeyboardInterrupt into exit status 130.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}

    def on_signal(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise Interrupted(signum)

    for s in HANDLED:
        signal.signal(s, on_signal)
    try:
        yield
    except Interrupted as stop:
        if not stop.reported:
            print(hint, file=sys.stderr, flush=True)
        raise SystemExit(exit_status(stop)) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class GridInterrupted(KeyboardInterrupt):
    """The grid was asked to stop (Ctrl-C or SIGTERM); its workers have been stopped."""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`GridInterrupted` like Ctrl-C raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise GridInterrupted(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def exit_when_stopped() -> Iterator[None]:
    """For the grid commands: a stopped grid leaves with 128 + signal after saying how to continue.

    Exiting here rather than in ``main``: typer would turn the KeyboardInterrupt into its own exit.
    """
    try:
        yield
    except GridInterrupted as stop:
        import sys

        print("stopped: the running jobs were stopped at their last checkpoint; run the same command again to "
              "continue (finished work is kept)", file=sys.stderr, flush=True)
        raise SystemExit(143 if "SIGTERM" in str(stop) else 130) from None
