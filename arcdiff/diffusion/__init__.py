"""Noise schedules and diffusion processes shared by the ARC and image tracks."""
