"""Base of the builders whose examples are rendered from their config alone (``synthetic_me``, ``synthetic_faces``).

Such a builder needs no files: every example comes from its config (and the
config's seed), all in one ``train`` split — the protocols, not the builder,
split subjects — and is written under ``build_writing()`` like every merjax
build, so that the same config gives the same bytes.
"""

from __future__ import annotations

from typing import Iterator

import tensorflow_datasets as tfds

from datasets.core.serialization import build_writing


class RenderedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One ``train`` split of what ``_generate_examples`` renders; subclasses give the configs, ``_info`` and it."""

    def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                              download_config: tfds.download.DownloadConfig) -> None:
        with build_writing():
            super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        return {"train": self._generate_examples()}
