"""Shared fixtures: tiny models written once per test session in the real file formats."""

from __future__ import annotations

import os
from pathlib import Path

# One thread per test process (and the workers they start): the suite runs in parallel processes
# (pytest-xdist), and tiny models lose far more to threads fighting over 2 cores than they gain.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from engine.config import Config, load_config
from tests.tinymodels import write_tiny_config


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config.toml pointing at tiny VQGAN/CLIP files, 32x32, 4 steps, 4 cutouts."""
    return write_tiny_config(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_cfg(tiny_config_path: Path) -> Config:
    return load_config(tiny_config_path)
