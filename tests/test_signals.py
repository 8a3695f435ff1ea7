"""The one signal handler: a signal inside ``stop_signals`` is an ``Interrupted``; ``exit_on_stop`` exits 128+N."""
from __future__ import annotations

import os
import signal

import pytest

from crt_bench.core.signals import Interrupted, exit_on_stop, stop_signals


def test_sigterm_becomes_interrupted_then_the_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as caught:
        with stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_grid_handles_only_sigterm_and_leaves_ctrl_c_alone() -> None:
    int_handler = signal.getsignal(signal.SIGINT)
    with stop_signals((signal.SIGTERM,)):
        assert signal.getsignal(signal.SIGINT) is int_handler
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL


def test_exit_on_stop_prints_the_hint_once_and_exits_with_128_plus_the_signal(capsys) -> None:
    with pytest.raises(SystemExit) as leaving:
        with exit_on_stop("run it again to continue"):
            raise Interrupted(signal.SIGTERM)
    assert leaving.value.code == 143 and capsys.readouterr().err == "run it again to continue\n"
    reported = Interrupted(signal.SIGINT)
    reported.reported = True  # the run already said how to continue
    with pytest.raises(SystemExit) as leaving:
        with exit_on_stop("not printed"):
            raise reported
    assert leaving.value.code == 130 and capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as leaving:
        with exit_on_stop("ctrl-c"):
            raise KeyboardInterrupt
    assert leaving.value.code == 130 and "ctrl-c" in capsys.readouterr().err
