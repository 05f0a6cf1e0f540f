"""Image diffusion with a U-Net: config, data readers, model, train, sample, metric, diagnostics."""
