"""Training: hard-negative mining, training data from workdirs, feature providers, the one loop, checkpoints."""
