# kimi-bridge: one image, two processes (refresher and server), config in the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY common ./common
COPY refresher ./refresher
COPY server ./server

# No secrets in the image: config.json comes from the mounted /data at run time.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home kimi \
    && mkdir -p /data && chown kimi:kimi /data && chmod 0700 /data
USER kimi
VOLUME ["/data"]
EXPOSE 6867

# SIGTERM lets a refresh on the wire finish and be saved; give it time (compose: stop_grace_period).
STOPSIGNAL SIGTERM
# Readiness: "unhealthy" in `docker ps` while no Kimi account is usable (plain Docker does not restart on it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-m", "server.healthcheck", "--config", "/data/config.json", "--probe", "ready"]

CMD ["python", "-m", "server", "--config", "/data/config.json"]
