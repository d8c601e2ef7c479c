FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

# A Java runtime: every uploaded form is checked with ODK Validate (JavaRosa) before it is kept.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md ./
COPY server ./server
COPY sync ./sync
COPY device ./device
COPY forms ./forms
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system --home /app fieldsync && mkdir -p /data && chown fieldsync /data
USER fieldsync

ENV FIELDSYNC_HOST=0.0.0.0 FIELDSYNC_PORT=8000 FIELDSYNC_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)" || exit 1
# `serve` applies migrations, loads the wards and creates the first admin before it listens.
CMD ["fieldsync", "serve"]
