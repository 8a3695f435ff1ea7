"""Core (layer 0): errors, checks, constants, signals, seeding, atomic files, provenance, TF32.

May import: nothing of crt_bench.
"""
