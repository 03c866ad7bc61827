"""Importers for published weights (VGGFace2 ResNet-50 / SE-ResNet-50 pickles and Keras .h5 files,
PyTorch LSTMs) into Flax variables."""

from merjax.weights.keras_h5 import keras_h5_to_state_dict
from merjax.weights.state_dict import (
    load_vggface2_pickle,
    lstm_params_from_state_dict,
    resnet_variables_from_state_dict,
)
from merjax.weights.vggface2 import load_vggface2

__all__ = [
    "keras_h5_to_state_dict",
    "load_vggface2",
    "load_vggface2_pickle",
    "lstm_params_from_state_dict",
    "resnet_variables_from_state_dict",
]
