"""Training: the loop over phases, optimizer and learning-rate schedule, checkpoints, logging."""
