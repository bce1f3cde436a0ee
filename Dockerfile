# The tracker image: `tracker-api` by default; `tracker-api migrate` (the schema, run before
# serving: the migrate job of docker-compose.yml) and `python data/seed.py` (demo accounts).
#   docker build -t mqtt-tracker .        (docker compose builds it as well)
# Configuration comes from TRACKER_* variables (see .env.example and docker-compose.yml).

# --- build: a virtualenv with the dependencies, then the project itself -------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

WORKDIR /src
# Dependencies first, read from pyproject.toml alone, so editing the code does not
# reinstall them. Every dependency ships a manylinux wheel: no compiler in the image.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt
COPY . .
RUN pip install --no-deps .

# --- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRACKER_HOST=0.0.0.0 \
    TRACKER_PORT=9000

# A fixed, unprivileged uid, so volume permissions do not depend on the build order.
RUN groupadd --system --gid 10001 tracker \
 && useradd --system --uid 10001 --gid tracker --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin tracker

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The seed script is not part of the installed package (it is a tool, not the service).
COPY data/seed.py data/seed.py
# The default TRACKER_DATABASE_URL (sqlite:///var/tracker.db) is relative to /app: let a
# plain `docker run` with SQLite work; compose points the service at PostgreSQL instead.
RUN mkdir var && chown tracker:tracker var

USER tracker
EXPOSE 9000

# Liveness only (/readyz would mark the container unhealthy during a broker outage, and
# the process recovers from those by itself). python, because the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRACKER_PORT', '9000'), timeout=2)"]

CMD ["tracker-api"]
