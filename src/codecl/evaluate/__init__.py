"""Scoring model outputs: text metrics (BLEU, exact match) and syntax checks.

Each function takes plain strings, so it can score predictions from any model or from a file.
"""
