# syntax=docker/dockerfile:1
# Multi-stage: build wheels for the app and its dependencies, install them in a slim runtime
# image that runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 attune
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --chown=attune:attune packs /opt/attune/packs
USER attune
WORKDIR /home/attune
ENV ATTUNE_HTTP_HOST=0.0.0.0 \
    ATTUNE_PACKS_PATH=/opt/attune/packs \
    ATTUNE_DATA_DIR=/home/attune/data \
    ATTUNE_DATABASE_URL=sqlite+aiosqlite:////home/attune/data/attune.db \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/live', timeout=2)"
ENTRYPOINT ["attune"]
CMD ["serve"]
