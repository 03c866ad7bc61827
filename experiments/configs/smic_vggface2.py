"""Seed 001 Exp-I: the VGGFace2 ResNet-50 alone, trained and tested on single frames.

Every frame of a training clip is a sample, with random flip and rotation, and
each class is resampled to the same count (the paper's Table 1 multipliers,
Aug.-I: ~15000 frames per class on SMIC-HS). A test clip is scored per frame
(frame-level metrics, as in the paper) and by the mean of its frames'
log-probabilities (clip-level metrics, comparable with Exp-II/III).
"""

from experiments.configs import seed001


def get_config(preset: str = "default"):
    return seed001.config("smic_vggface2", preset, frames=True)
