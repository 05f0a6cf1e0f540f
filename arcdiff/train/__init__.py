"""Training: the loop, checkpoints, logging, LoRA adaptation."""
