"""VQGAN+CLIP: steer a pretrained VQGAN's latent through CLIP similarity.

The engine knows nothing of Discord. Public entry points:
``engine.config.load_config``, ``engine.spec.request.Request``, ``engine.method.generate.generate``,
``engine.models.loader.ModelCache`` and ``engine.queue.JobQueue``.
"""

__version__ = "0.1.0"
