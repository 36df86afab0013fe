"""pytest fixture: ``from tests.fakediscord.fixtures import fake_discord`` in a test module or conftest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .server import FakeDiscord, point_discord_at


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with discord.py pointed at it (undone at teardown)."""
    async with FakeDiscord() as server:
        undo = point_discord_at(server)
        try:
            yield server
        finally:
            undo()
