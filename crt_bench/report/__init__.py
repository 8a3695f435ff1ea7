"""Report (layer 7): markdown tables, figures, REPORT.md and LEADERBOARD.md, derived from the results store.

May import: layers 0-6.
"""
