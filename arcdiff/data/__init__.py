"""Task sources, augmentations, canvas encoding and the training stream."""
