"""SIGTERM and SIGINT: stop cleanly, record it, say how to continue. The one signal handler of the package.

SLURM (time limit, preemption), ``kill`` and schedulers send SIGTERM; Python's default for it is to
die on the spot, which left a run marked "running" forever and printed nothing.  Inside
:func:`stop_signals` the chosen signals raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the main
thread, so the training loop, the certification driver and the grid take the path Ctrl-C already
takes: the current epoch (or group of images) is abandoned, the last checkpoint (or the certified rows)
stays, the run, certification or grid job is marked ``interrupted``, and the grid stops its workers.
:func:`exit_on_stop` then says how to continue (unless the run already did) and exits with
``128 + signal``.  A second signal during that clean-up gets the default action (SIGTERM kills, Ctrl-C
raises a plain ``KeyboardInterrupt``): a user who insists is obeyed.

* ``run`` / ``certify`` / a local grid job: :func:`stop_on_signals` (both signals, then exit);
* a grid (``run_grid``, ``follow``): ``stop_signals((SIGTERM,))`` (Ctrl-C is already a KeyboardInterrupt),
  and the grid commands wrap themselves in ``exit_on_stop(hint)``.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)
_DEFAULT = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}


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
def stop_signals(signals: Sequence[signal.Signals] = HANDLED) -> Iterator[None]:
    """Inside the block each of ``signals`` raises :class:`Interrupted` once; the handlers are restored after.

    Only the main thread may set handlers: elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def on_signal(signum: int, frame: Any) -> None:
        for s in signals:  # a second signal during the clean-up gets the default action
            signal.signal(s, _DEFAULT.get(s, signal.SIG_DFL))
        raise Interrupted(signum)

    for s in signals:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def exit_on_stop(hint: str) -> Iterator[None]:
    """For a CLI command: a stop (signal or Ctrl-C) leaves as ``SystemExit(128 + signal)`` after printing
    ``hint`` to stderr, unless the run or certification already said how to continue (``reported``).

    Exiting here rather than in ``main``: typer turns any KeyboardInterrupt into exit status 130.
    """
    try:
        yield
    except KeyboardInterrupt as stop:
        if not getattr(stop, "reported", False):
            print(hint, file=sys.stderr, flush=True)
        raise SystemExit(exit_status(stop)) from None


@contextlib.contextmanager
def stop_on_signals(hint: str) -> Iterator[None]:
    """``run`` / ``certify``: SIGTERM and SIGINT stop the work; then exit with ``hint`` (see the module)."""
    with exit_on_stop(hint), stop_signals():
        yield
