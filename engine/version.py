"""The engine's version: recorded in every picture's metadata, so a rerun knows what painted it."""

__version__ = "0.1.0"
