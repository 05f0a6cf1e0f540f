"""Sampling, voting, scoring and reports."""
