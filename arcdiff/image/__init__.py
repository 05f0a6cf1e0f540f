"""Image-diffusion track: Gaussian diffusion core, 2D toy suite (and later small images)."""
