# VQGAN+CLIP Discord bot on an NVIDIA GPU.
#   docker build -t vqgan-clip-bot .
#   docker run -d --gpus all -e DISCORD_TOKEN=... \
#     -v vqgan-models:/home/app/.cache/vqgan-clip -v vqgan-data:/data vqgan-clip-bot
# Needs the NVIDIA Container Toolkit on the host. The image holds no token and no models:
# models are downloaded into the model volume on first use; jobs and results live in /data.

# PyTorch with CUDA 12.4 + cuDNN runtime, Python 3.11.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VQGAN_CLIP_CACHE=/home/app/.cache/vqgan-clip

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app

# Dependencies first (torch is already in the base image), then the code.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY bot ./bot
RUN pip install . && rm -rf /app/engine /app/bot /app/build

COPY config.toml /app/config.toml

# The working directory is /, so config.toml's relative paths (data/jobs.sqlite3, data/results,
# data/discord) are /data/..., in the data volume.
RUN mkdir -p /data "$VQGAN_CLIP_CACHE" && chown -R app:app /data /home/app/.cache
WORKDIR /
USER app

VOLUME ["/home/app/.cache/vqgan-clip", "/data"]

# Healthy while the gateway session is up: the bot touches <data_dir>/heartbeat every 30 s.
# The start period covers the first model download.
HEALTHCHECK --interval=60s --timeout=15s --start-period=600s --retries=3 \
    CMD ["python", "-m", "bot.health", "--config", "/app/config.toml"]

# SIGTERM (docker stop) stops the running job and keeps it queued for the next start;
# give it time with `docker stop -t 30` / stop_grace_period.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot", "--config", "/app/config.toml"]
