"""Shared fixtures: small in-memory clip sets and tiny model configs built on the fly."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from merjax.data.pipeline import ClipSet


def make_clip_set(num_subjects: int = 4, clips_per_class: int = 2, num_classes: int = 3, size: int = 16,
                  min_length: int = 6, max_length: int = 12, seed: int = 0) -> ClipSet:
    """Random clips whose class shows as a brightness change in one image quadrant over time."""
    rng = np.random.default_rng(seed)
    frames, labels, subjects, clip_ids = [], [], [], []
    for s in range(num_subjects):
        for label in range(num_classes):
            for c in range(clips_per_class):
                length = int(rng.integers(min_length, max_length + 1))
                clip = rng.integers(60, 120, (length, size, size, 3)).astype(np.float32)
                ramp = np.linspace(0, 80, length)[:, None, None, None]
                half = size // 2
                rows, cols = divmod(label % 4, 2)
                clip[:, rows * half:(rows + 1) * half, cols * half:(cols + 1) * half] += ramp
                frames.append(np.clip(clip, 0, 255).astype(np.uint8))
                labels.append(label)
                subjects.append(f"s{s + 1}")
                clip_ids.append(f"s{s + 1}_{label}_{c}")
    landmarks = [np.zeros((len(f), 68, 2), np.float32) for f in frames]
    return ClipSet(name="fake/clips", class_names=tuple(f"c{i}" for i in range(num_classes)),
                   streams={"frames": frames},
                   landmarks=landmarks, labels=np.asarray(labels, np.int32), subjects=np.asarray(subjects),
                   clip_ids=np.asarray(clip_ids), fps=np.full(len(frames), 100.0, np.float32),
                   apexes=np.asarray([len(f) // 2 for f in frames], np.int32),
                   datasets=np.full(len(frames), "fake"))


def tiny_model_config(name: str = "clip_classifier", temporal: str = "bilstm") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "name": name,
        "dtype": "float32",
        "backbone": {"name": "resnet", "stage_sizes": (1, 1), "width": 4},
        "temporal": {"kind": temporal, "hidden": 8, "layers": 2, "dropout": 0.1},
        "head": {"hidden": (16, 8), "dropout": 0.2},
    })


@pytest.fixture
def clip_set() -> ClipSet:
    return make_clip_set()


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> str:
    """The synthetic ``tiny`` dataset, built once per test session; returns its prepared directory."""
    from datasets.build import ensure_built

    return ensure_built("synthetic_me/tiny", str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture
def tiny_data_dir(tiny_dataset_dir) -> str:
    """The TFDS data_dir holding the built tiny dataset (<data_dir>/synthetic_me/tiny/<version>)."""
    import os

    return os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset_dir)))


@pytest.fixture(scope="session")
def senet50_torch():
    """A full-size SE-ResNet-50 (VGGFace2 variant) in PyTorch with random weights, in eval mode."""
    from tests import torch_reference as ref

    return ref.randomize_(ref.ResNet((3, 4, 6, 3), width=64, num_classes=8631, se_reduction=16), seed=4).eval()


@pytest.fixture(scope="session")
def senet50_state(senet50_torch) -> dict:
    """Its state dict in the published (Caffe-converted) format: numpy arrays, no BN counters."""
    from tests import torch_reference as ref

    return ref.published_state(senet50_torch)
