# The PSM application image: used by the worker, the migration job and the dashboard.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PSM_HOME=/data/psm
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY psm_model psm_model
COPY psm_db psm_db
COPY worker worker
COPY dashboard dashboard
RUN pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL" \
    && pip install .
EXPOSE 8501
CMD ["psm", "--help"]
