"""The transformer denoiser and its layers."""
