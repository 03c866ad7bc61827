"""The embedded pretraining corpus: rendered faces in seed 004's nine macro-expressions (TFDS builder
``synthetic_faces``).

Importing this package registers the builder with TFDS.
"""

from datasets.synthetic_faces.synthetic_faces import CONFIGS, MACRO_9, SyntheticFaces, SyntheticFacesConfig

__all__ = ["CONFIGS", "MACRO_9", "SyntheticFaces", "SyntheticFacesConfig"]
