"""ml_collections configs of the experiments, one file per experiment with presets."""
