"""Train state, pure train/eval steps, losses, metrics, sharding, checkpoints and the fit loop."""
