"""Flax models by name: backbones (the VGGFace2-variant ResNet and SE-ResNet), scanned LSTMs, heads,
seed 001's classifiers and seed 002's region CNNs and region LSTMs.

``registry.create_model(config.model, num_classes)`` builds the model
``config.model.name`` around the backbone ``config.model.backbone.name``; the
interface every backbone follows is ``backbones.Backbone``. Each module below
registers its networks when imported, so a new network's module is imported here.
"""

from merjax.models import registry
from merjax.models.backbones import Backbone, run_stages
from merjax.models.classifiers import ClipClassifier, FrameClassifier
from merjax.models.heads import MLPHead
from merjax.models.recurrent import BiLSTM, LSTMStack, temporal_model
from merjax.models.region import RegionCNN, RegionCNNs, RegionClipClassifier, RegionFrameClassifier
from merjax.models.registry import (
    BACKBONES,
    MODELS,
    backbone_endpoints,
    create_backbone,
    create_model,
    import_backbone_weights,
)
from merjax.models.resnet import (
    VGGFACE2_MEAN_BGR,
    BatchNorm,
    Bottleneck,
    ResNet,
    ResNet50,
    SENet50,
    vggface2_preprocess,
)

__all__ = [
    "BACKBONES",
    "MODELS",
    "VGGFACE2_MEAN_BGR",
    "Backbone",
    "BatchNorm",
    "BiLSTM",
    "Bottleneck",
    "ClipClassifier",
    "FrameClassifier",
    "LSTMStack",
    "MLPHead",
    "RegionCNN",
    "RegionCNNs",
    "RegionClipClassifier",
    "RegionFrameClassifier",
    "ResNet",
    "ResNet50",
    "SENet50",
    "backbone_endpoints",
    "create_backbone",
    "create_model",
    "import_backbone_weights",
    "registry",
    "run_stages",
    "temporal_model",
    "vggface2_preprocess",
]
