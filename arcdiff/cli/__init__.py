"""The command line (typer): every typer module of arcdiff is in this package."""

from arcdiff.cli.app import app, main

__all__ = ["app", "main"]
