"""Store (layer 3): the results folder: parquet tables, locks, Cohen TSV in/out, imported-log metadata, the grid status file, saved chains, bench tables, results-folder checks.

May import: core, config, parallel.
"""
