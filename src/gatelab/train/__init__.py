"""Training: the epoch loop (fit), the truncated-BPTT loop (tbptt), run folders and
checkpoints, metrics and data-parallel training."""
