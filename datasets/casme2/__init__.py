"""CASME II (Chinese Academy of Sciences): RAW_selected and Cropped trees; see ``casme2.py``."""

from datasets.casme2 import casme2  # noqa: F401  (registers the builder)
