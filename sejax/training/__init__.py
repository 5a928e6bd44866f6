"""The train state, the per-device steps, data parallelism, checkpoints and the loop."""
