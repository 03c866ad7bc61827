"""Shared machinery of the real-database TFDS builders (not a dataset: it has no ``core.py`` builder)."""
