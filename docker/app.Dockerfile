# The PSM application image: the migration job, the dashboard and the demo job use the CPU
# build (the default); the worker builds it with TORCH_INDEX_URL=.../whl/cu126 for CUDA.
# Versions come from constraints.txt (the tested environment); torch comes from its own index.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PSM_HOME=/data/psm \
    MPLBACKEND=Agg
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# 1. torch from its index (no dependencies: those come from PyPI at the pinned versions next)
RUN pip install --no-deps "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
# 2. the dependencies, from pyproject.toml alone (an empty package), so code edits keep this layer
COPY constraints.txt pyproject.toml README.md ./
RUN pip install -c constraints.txt . && pip uninstall -y psm-maps
# 3. the project itself
COPY alembic.ini ./
COPY psm_model psm_model
COPY psm_db psm_db
COPY worker worker
COPY dashboard dashboard
RUN pip install --no-deps -c constraints.txt . && rm -rf build *.egg-info
# the demo job (compose profile demo)
COPY docker/demo.sh docker/demo.sh
COPY scripts/demo_regions.geojson scripts/demo_regions.geojson
EXPOSE 8501
CMD ["psm", "--help"]
