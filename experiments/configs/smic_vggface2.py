"""Seed 001 Exp-I: the VGGFace2 ResNet-50 alone, trained and tested on single frames.

Every frame of a training clip is a sample, with random flip and rotation, and
each class is resampled to the same count (the paper's Table 1 multipliers,
Aug.-I: ~15000 frames per class on SMIC-HS). A test clip is scored per frame
(frame-level metrics, as in the paper) and by the mean of its frames'
log-probabilities (clip-level metrics, comparable with Exp-II/III).
"""

from experiments.configs import common


def get_config(preset: str = "default"):
    config = common.base()
    config.experiment = "smic_vggface2"
    config.model.kind = "frame"
    config = common.apply_preset(config, preset)
    # Table 1, Aug.-I: every class brought to about 15000 frames on SMIC-HS.
    config.data.balance_per_class = {"paper": 15000, "smoke": 16}.get(preset, 600)
    if preset == "default":
        config.train.batch_size = 32        # single frames are cheap: larger batches
        config.train.eval_batch_size = 64
    return config
