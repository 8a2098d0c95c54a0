"""Training: reading the feature cache, checkpoints, MF² pretraining."""
