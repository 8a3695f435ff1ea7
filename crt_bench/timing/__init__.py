"""Timing (layer 6): timing probes, interleaved rounds and the timing grid.

May import: layers 0-5.
"""
