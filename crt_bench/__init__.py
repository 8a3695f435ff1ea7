"""crt-bench: what it costs to make an architecture certifiably robust (randomized smoothing).

The subpackages are layers; a layer imports only the layers below it (``tests/test_layout.py`` checks
this, reading ``[tool.importlinter]`` in ``pyproject.toml``), lowest first:

====  ==============================  ==============================================================
0     ``core``                        errors, checks, constants, signals, seeding, atomic files, TF32
1     ``config``                      run/certify configs, engine options, profiles, recipe scaling
2     ``parallel``                    torchrun environment, process group, DDP, the rank's noise
3     ``store``                       the results folder: tables, locks, Cohen logs, chains, status
4     ``data`` | ``models`` | ``methods``  datasets -> tensors; architectures; methods -> loss
5     ``train`` | ``certify``         the epoch loop and step engine; CERTIFY/PREDICT and their driver
6     ``analysis`` | ``timing``       metrics, intervals, selection, leaderboard; timing probes
7     ``report``                      markdown tables, figures, REPORT.md, LEADERBOARD.md
8     ``grid``                        jobs, executors, running a grid, chains, proxy, reproduce
9     ``cli``                         the typer app
====  ==============================  ==============================================================

Siblings on one layer (``|``) do not import each other.
"""

__version__ = "0.1.0"
