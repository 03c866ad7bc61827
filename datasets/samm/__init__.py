"""SAMM (Manchester Metropolitan University): grayscale 200 fps clips; see ``samm.py``."""

from datasets.samm import samm  # noqa: F401  (registers the builder)
