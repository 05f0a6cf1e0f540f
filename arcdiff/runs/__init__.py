"""The run-directory contract: what every layer above reads and writes in ``outputs/<name>/``."""
