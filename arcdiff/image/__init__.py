"""Image-diffusion track: Gaussian diffusion and time embeddings shared by the 2D toy suite
(toy2d/) and the image U-Net (unet/)."""
