"""Shared pytest configuration (process helpers live in ``procs.py`` beside this file)."""
