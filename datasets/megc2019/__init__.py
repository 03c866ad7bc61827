"""MEGC 2019 composite (SMIC + CASME II + SAMM, 3 classes); see ``megc2019.py``."""

from datasets.megc2019 import megc2019  # noqa: F401  (registers the builder)
