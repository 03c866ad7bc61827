"""SMIC (Oulu): HS / VIS / NIR, raw and cropped trees; see ``smic.py``."""

from datasets.smic import smic  # noqa: F401  (registers the builder)
