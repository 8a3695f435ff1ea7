"""The exceptions users see: a clear message, printed by the CLI as one line without a traceback."""


class CrtBenchError(Exception):
    """A problem with the user's input or environment (bad name, missing data, corrupt file, ...).

    The CLI prints ``str(err)`` and exits with :attr:`exit_code` (2: bad input); nothing else should be
    needed to act on it.
    """

    exit_code = 2


class JobsFailed(CrtBenchError):
    """Jobs of a grid (sweep, chain, reproduce) failed or did not finish: exit status 1, not 2 (the input was
    fine; the work was not done)."""

    exit_code = 1


def exit_code(err: BaseException) -> int:
    """The exit status the CLI leaves with for ``err`` (2 unless the error says otherwise)."""
    return int(getattr(err, "exit_code", 2))
