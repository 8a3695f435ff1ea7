"""Analysis (layer 6): metrics, intervals, selection of certifications, evidence and verdict, leaderboard ranking, chain agreement, summaries.

May import: layers 0-5.
"""
