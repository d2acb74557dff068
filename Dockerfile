# syntax=docker/dockerfile:1
# Multi-stage: build wheels for the dependencies, then for the app, and install them in a slim
# runtime image that runs as a non-root user. Dependencies come first, from pyproject.toml
# alone, so a change to the source rebuilds only the app's layers. .dockerignore keeps the
# context to what is copied here (no .venv, databases or .attune/ with its secret key).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip wheel --no-cache-dir --wheel-dir /wheels/deps -r requirements.txt
COPY README.md ./
COPY config ./config
COPY engine ./engine
COPY bot ./bot
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/app .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 attune \
 && install -d -m 0700 -o attune -g attune /home/attune/data
COPY --from=build /wheels/deps /wheels/deps
RUN pip install --no-cache-dir --no-index /wheels/deps/*.whl && rm -rf /wheels/deps
COPY --from=build /wheels/app /wheels/app
RUN pip install --no-cache-dir --no-index --no-deps /wheels/app/*.whl && rm -rf /wheels/app
COPY --chown=attune:attune packs /opt/attune/packs
USER attune
WORKDIR /home/attune
ENV ATTUNE_HTTP_HOST=0.0.0.0 \
    ATTUNE_PACKS_PATH=/opt/attune/packs \
    ATTUNE_DATA_DIR=/home/attune/data \
    ATTUNE_DATABASE_URL=sqlite+aiosqlite:////home/attune/data/attune.db \
    PYTHONUNBUFFERED=1
EXPOSE 8080
# `attune serve` answers GET /health/live; `attune worker` serves no HTTP, and the check then
# reads the sign of life the worker rewrites at every heartbeat (ATTUNE_DATA_DIR/alive).
# docker-compose.yml names the role outright: `attune health --http` or `--worker`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["attune", "health"]
ENTRYPOINT ["attune"]
CMD ["serve"]
