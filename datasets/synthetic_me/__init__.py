"""The embedded default dataset: rendered micro-expression clips (TFDS builder ``synthetic_me``).

Importing this package registers the builder with TFDS.
"""

from datasets.synthetic_me.synthetic_me import CONFIGS, SyntheticMe, SyntheticMEConfig

__all__ = ["CONFIGS", "SyntheticMe", "SyntheticMEConfig"]
