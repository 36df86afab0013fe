"""Fake Discord server for end-to-end tests of discord.py bots. See README.md."""

from .interactions import Callback, Interaction
from .models import (
    ApiError,
    Attachment,
    Channel,
    Emoji,
    GatewayEvent,
    Guild,
    Message,
    Request,
    Role,
    UploadedFile,
    User,
)
from .server import FakeDiscord, point_discord_at
from .state import permission_bits

__all__ = [
    "ApiError",
    "Attachment",
    "Callback",
    "Channel",
    "Emoji",
    "FakeDiscord",
    "GatewayEvent",
    "Guild",
    "Interaction",
    "Message",
    "Request",
    "Role",
    "UploadedFile",
    "User",
    "permission_bits",
    "point_discord_at",
]
