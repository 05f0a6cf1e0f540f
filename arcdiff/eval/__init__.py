"""Sampling, voting and scoring."""
