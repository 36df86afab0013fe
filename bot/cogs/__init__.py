"""Cogs: imagine (/imagine, /edit), gestures (replies, reactions, context menu), admin (/queue, /cancel, /help)."""
