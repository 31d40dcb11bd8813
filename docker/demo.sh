#!/usr/bin/env bash
# The compose stack's demo job (`docker compose --profile demo up`): a small synthetic world,
# the demo preset trained on this container's CPUs, evaluated and embedded, so the dashboard
# opens on a soundscape map. It runs once, after the migration; everything it makes lives in
# the psmhome volume (PSM_HOME) and the database, and a second run reuses it and returns.
# The embedding goes through Celery: a CPU worker in this container, plus any GPU worker of
# the stack on the same queue.
#   PSM_DEMO_SAMPLES (5000), PSM_DEMO_TRAIN_MINUTES (3), PSM_DEMO_FAST=1 (tiny world and preset).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."   # /app in the image
if [ "${PSM_DEMO_FAST:-0}" = "1" ]; then
  NAME=compose-fast; PRESET=tiny; SAMPLES="${PSM_DEMO_SAMPLES:-400}"; CLIP=1; IMG=32
  TRAIN_ARGS=(--epochs 1 --threads 1)
  USA="-96.0,41.0,-93.0,42.5"; CITY="-93.75,41.5,-93.45,41.7"; USA_ZOOM=5; CITY_ZOOM=3
else
  NAME=compose; PRESET=demo; SAMPLES="${PSM_DEMO_SAMPLES:-5000}"; CLIP=4; IMG=48
  TRAIN_ARGS=(--max-minutes "${PSM_DEMO_TRAIN_MINUTES:-3}")
  USA="-125.0,24.5,-66.9,49.4"; CITY="-94.1,41.35,-93.2,41.85"; USA_ZOOM=5; CITY_ZOOM=1
fi
GSD=100
WORLD="$PSM_HOME/data/world-$NAME"
CKPT="$PSM_HOME/checkpoints/$NAME/best.safetensors"
RUN="$PSM_HOME/run"
mkdir -p "$RUN"
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

step "world: $SAMPLES samples, seed 0"
if [ -f "$WORLD/world.json" ] && [ -f "$WORLD/index.parquet" ]; then
  echo "reusing $WORLD"
else
  psm world build --seed 0 --samples "$SAMPLES" --out "$WORLD" --image-size "$IMG" \
    --clip-seconds "$CLIP" --gsd "$GSD"
fi

step "train the '$PRESET' preset on CPU"
if [ -f "$CKPT" ]; then
  echo "reusing $CKPT"
else
  psm train --dataset "$WORLD" --out "$(dirname "$CKPT")" --preset "$PRESET" "${TRAIN_ARGS[@]}"
fi
VERSION="$(psm register-model "$CKPT" --name "$NAME" | tail -n 1)"
echo "model version $VERSION"

step "evaluate"
if [ -f "$PSM_HOME/eval/$NAME/results.json" ]; then
  echo "reusing $PSM_HOME/eval/$NAME"
else
  psm eval --checkpoint "$CKPT" --dataset "$WORLD" --out "$PSM_HOME/eval/$NAME" --store
fi

step "embed the USA (zoom $USA_ZOOM) and Des Moines (zoom $CITY_ZOOM) through Celery"
MARK="$RUN/embedded-$VERSION"
if [ -f "$MARK" ]; then
  echo "reusing the embeddings of model $VERSION"
else
  # one process per core (up to 4), each with its share of the cores as torch threads: rendering
  # the world's tiles is most of the work
  CORES="$(nproc)"; WORKERS=$(( CORES < 4 ? CORES : 4 ))
  celery -A worker worker -c "$WORKERS" -n "demo@%h" --loglevel WARNING &
  WORKER=$!
  trap 'kill "$WORKER" 2>/dev/null || true; wait "$WORKER" 2>/dev/null || true' EXIT
  CONDS=(-c "month=5,hour=6,audio_source=aporee" -c "month=5,hour=18,audio_source=aporee"
         -c "month=5,hour=20,audio_source=inaturalist" -c "month=5,hour=10,audio_source=yfcc")
  psm embed-region --model "$VERSION" --region "$USA" --zoom "$USA_ZOOM" --imagery world \
    --gsd "$GSD" --size-px "$IMG" --source-name "world-$NAME" "${CONDS[@]}" --wait
  psm embed-region --model "$VERSION" --region "$CITY" --zoom "$CITY_ZOOM" --imagery world \
    --gsd "$GSD" --size-px "$IMG" --source-name "world-$NAME" "${CONDS[@]}" --wait
  touch "$MARK"
fi

step "demo region set and example queries"
psm regions load scripts/demo_regions.geojson --set demo --replace | tail -n 1
if [ ! -f "$RUN/queries-$VERSION" ]; then
  for text in "sound of a rooster" "sound of insects" "car horns in traffic"; do
    psm query embed --model "$VERSION" --text "$text" --name "$text" | tail -n 1
  done > "$RUN/queries-$VERSION"
fi
echo "stored queries: $(tr '\n' ' ' < "$RUN/queries-$VERSION")"
step "done: the dashboard is on http://localhost:8501 (model $VERSION)"
