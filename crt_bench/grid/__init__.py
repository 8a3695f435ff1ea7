"""Grid (layer 8): jobs, executors (submitit, inline), running and watching a grid, preflight, chains, the proxy workflow, reproduce.

May import: layers 0-7.
"""
