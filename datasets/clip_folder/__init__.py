"""Your own clips: a folder of frame folders or videos plus ``labels.csv``; see ``clip_folder.py``."""

from datasets.clip_folder import clip_folder  # noqa: F401  (registers the builder)
