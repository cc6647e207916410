"""The ``referee`` command line (top layer: nothing imports it)."""

from referee.platform.cli.main import cli, main

__all__ = ["cli", "main"]
