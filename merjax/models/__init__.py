"""Flax models: the VGGFace2-variant ResNet and SE-ResNet, scanned LSTMs, heads and seed 001's classifiers."""

from merjax.models.classifiers import ClipClassifier, FrameClassifier
from merjax.models.factory import create_model
from merjax.models.heads import MLPHead
from merjax.models.recurrent import BiLSTM, LSTMStack
from merjax.models.resnet import (
    VGGFACE2_MEAN_BGR,
    BatchNorm,
    Bottleneck,
    ResNet,
    ResNet50,
    SENet50,
    endpoint_of_module,
    vggface2_preprocess,
)

__all__ = [
    "VGGFACE2_MEAN_BGR",
    "BatchNorm",
    "BiLSTM",
    "Bottleneck",
    "ClipClassifier",
    "FrameClassifier",
    "LSTMStack",
    "MLPHead",
    "ResNet",
    "ResNet50",
    "SENet50",
    "create_model",
    "endpoint_of_module",
    "vggface2_preprocess",
]
