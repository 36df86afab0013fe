"""The command line (``python -m engine``): a parser table, shared flags, one module per subcommand."""

from engine.cli.main import main

__all__ = ["main"]
