"""Parallel (layer 2): the torchrun environment, process group, DDP wrap, the rank's share of noise, relaunching under torchrun.

May import: core, config.
"""
