"""Fake Discord server for end-to-end tests of discord.py bots. See README.md."""

from .models import Attachment, Channel, Message, Role, User
from .server import (
    ApiError,
    Callback,
    FakeDiscord,
    GatewayEvent,
    Interaction,
    Request,
    UploadedFile,
    permission_bits,
    point_discord_at,
)

__all__ = [
    "ApiError",
    "Attachment",
    "Callback",
    "Channel",
    "FakeDiscord",
    "GatewayEvent",
    "Interaction",
    "Message",
    "Request",
    "Role",
    "UploadedFile",
    "User",
    "permission_bits",
    "point_discord_at",
]
