"""Model files: safe checkpoint loading, named presets, downloads, and the VQGAN/CLIP wrappers."""
