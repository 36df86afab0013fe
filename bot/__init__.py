"""VQGAN+CLIP on Discord: slash commands, replies and reactions over the engine's job queue.

The bot never touches tensors: images cross the queue as PNG bytes and file paths.
"""
