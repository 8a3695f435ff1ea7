"""The one exception type users see: a clear message, printed by the CLI without a traceback."""



class CrtBenchError(Exception):
    """A problem with the user's input or environment (bad name, missing data, corrupt file, ...).

    The CLI prints ``str(err)`` and exits with status 2; nothing else should be needed to act on it.
    """
