# The ShiftWatch service image: worker, downstream services, replay, topic creation (`shiftwatch ...`).
# Built by `docker compose build` (docker-compose.yml); the model checkpoint is mounted, not baked in.
FROM python:3.11-slim

WORKDIR /app
# PyTorch's CPU build, the version pyproject.toml pins (PyPI's Linux wheel is a several-GB CUDA build).
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.15.0

COPY pyproject.toml setup.py README.md ./
COPY model ./model
COPY stream ./stream
COPY topics ./topics
COPY bench ./bench
# A C compiler only while the compiled kernels (model/online/*.pyx, setup.py) are built.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 shiftwatch \
    && mkdir -p /var/lib/shiftwatch && chown shiftwatch /var/lib/shiftwatch
COPY deploy/triggers.toml ./deploy/triggers.toml
COPY data ./data

USER shiftwatch
ENV SHIFTWATCH_CHECKPOINT=/app/checkpoints/taobao \
    SHIFTWATCH_DATA_DIR=/var/lib/shiftwatch \
    SHIFTWATCH_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["shiftwatch"]
CMD ["worker", "--loglevel", "info"]
