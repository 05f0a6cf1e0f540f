"""arcdiff: discrete diffusion for ARC-AGI tasks."""

__version__ = "0.1.0"
