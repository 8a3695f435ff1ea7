"""crt-bench: what it costs to make an architecture certifiably robust (randomized smoothing)."""

__version__ = "0.1.0"
