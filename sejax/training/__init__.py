"""The train state, the per-device steps, data parallelism, checkpoints, validation and the loop."""
