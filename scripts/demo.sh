#!/usr/bin/env bash
# The demo pipeline, run by `make demo` after bootstrap, services and migrations:
#   world -> train -> evaluate -> Celery worker -> embed_region (USA + a city) -> dashboard.
# Every step reuses what an earlier run made, so a second run is up in a minute or two.
# PSM_DEMO_FAST=1 runs the same steps with a tiny world and the tiny preset (used by tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
PSM="$BIN/psm"
export PSM_HOME="${PSM_HOME:-$(bash "$ROOT/scripts/psm_home.sh")}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
FAST="${PSM_DEMO_FAST:-0}"
PORT="${PSM_DASHBOARD_PORT:-8501}"
RUN="$PSM_HOME/run"
mkdir -p "$RUN"
cd "$ROOT"

if [ "$FAST" = "1" ]; then
  NAME=demo-fast; PRESET=tiny; SAMPLES="${PSM_DEMO_SAMPLES:-400}"; SECONDS_CLIP=1; IMG=32
  TRAIN_ARGS=(--epochs 1 --threads 1); GSD=100
  USA="-96.0,41.0,-93.0,42.5"; CITY="-93.75,41.5,-93.45,41.7"; USA_ZOOM=5; CITY_ZOOM=3
else
  NAME=demo; PRESET=demo; SAMPLES="${PSM_DEMO_SAMPLES:-20000}"; SECONDS_CLIP=4; IMG=48
  # the demo preset's schedule fitted to 6.5 min of training loop, so the whole demo stays near 15 min
  # on 2 idle cores; on a slower machine the run takes at least 1,228 steps (0.80 of the oracle) and
  # the demo takes longer, rather than drawing maps from a model that has not learned the hour
  TRAIN_ARGS=(--max-minutes "${PSM_DEMO_TRAIN_MINUTES:-6.5}" --min-steps "${PSM_DEMO_MIN_STEPS:-1228}"); GSD=100
  USA="-125.0,24.5,-66.9,49.4"; CITY="-94.1,41.35,-93.2,41.85"; USA_ZOOM=5; CITY_ZOOM=1
fi
WORLD="$PSM_HOME/data/world-$NAME"
TRAIN_OUT="$PSM_HOME/checkpoints/$NAME"
EVAL_OUT="$PSM_HOME/eval/$NAME"
step() { printf '\n\033[1;32m==> [%s] %s\033[0m\n' "$(date +%H:%M:%S)" "$*"; }

step "1/7 synthetic world ($SAMPLES samples, seed 0) in $WORLD"
if [ -f "$WORLD/world.json" ] && [ -f "$WORLD/index.parquet" ]; then
  echo "reusing $WORLD"
else
  "$PSM" world build --seed 0 --samples "$SAMPLES" --out "$WORLD" --image-size "$IMG" \
    --clip-seconds "$SECONDS_CLIP" --gsd "$GSD"
fi

step "2/7 train the '$PRESET' preset"
CKPT="$TRAIN_OUT/best.safetensors"
if [ -f "$CKPT" ]; then
  echo "reusing $CKPT"
else
  "$PSM" train --dataset "$WORLD" --out "$TRAIN_OUT" --preset "$PRESET" "${TRAIN_ARGS[@]}"
fi
VERSION="$("$PSM" register-model "$CKPT" --name "$NAME" | tail -n 1)"
echo "model version $VERSION"

step "3/7 evaluate on the held-out test cells"
if [ -f "$EVAL_OUT/results.json" ]; then
  echo "reusing $EVAL_OUT"
else
  "$PSM" eval --checkpoint "$CKPT" --dataset "$WORLD" --out "$EVAL_OUT" --store
fi
[ -f "$EVAL_OUT/results.md" ] && cat "$EVAL_OUT/results.md"

step "4/7 Celery worker"
if [ -f "$RUN/worker.pid" ] && kill -0 "$(cat "$RUN/worker.pid")" 2>/dev/null; then
  echo "worker already running (pid $(cat "$RUN/worker.pid"))"
else
  # one worker process per core: rendering the world's tiles is most of a chunk's time and runs on
  # one core per process (docs/benchmarks.md "The demo's budget"); each process takes its share of
  # the cores as torch threads unless PSM_TORCH_THREADS says otherwise (docs/worker.md)
  CORES="$(nproc)"; WORKERS="${PSM_DEMO_WORKERS:-$(( CORES < 4 ? CORES : 4 ))}"
  nohup "$BIN/celery" -A worker worker -c "$WORKERS" --loglevel INFO > "$RUN/worker.log" 2>&1 &
  echo $! > "$RUN/worker.pid"
  echo "worker pid $(cat "$RUN/worker.pid"), log $RUN/worker.log"
fi

step "5/7 embed the USA (zoom $USA_ZOOM) and a city (zoom $CITY_ZOOM) through Celery"
CONDS=(-c "month=5,hour=6,audio_source=aporee" -c "month=5,hour=18,audio_source=aporee"
       -c "month=5,hour=20,audio_source=inaturalist" -c "month=5,hour=10,audio_source=yfcc")
MARK="$RUN/embedded-$VERSION"
if [ -f "$MARK" ]; then
  echo "reusing the embeddings of model $VERSION"
else
  "$BIN/celery" -A worker embed_region --model "$VERSION" --region "$USA" --zoom "$USA_ZOOM" \
    --imagery world --gsd "$GSD" --size-px "$IMG" --source-name "world-$NAME" "${CONDS[@]}" --wait
  "$BIN/celery" -A worker embed_region --model "$VERSION" --region "$CITY" --zoom "$CITY_ZOOM" \
    --imagery world --gsd "$GSD" --size-px "$IMG" --source-name "world-$NAME" "${CONDS[@]}" --wait
  touch "$MARK"
fi

step "6/7 demo region set and example queries"
"$PSM" regions load "$ROOT/scripts/demo_regions.geojson" --set demo --replace | tail -n 1
if [ -f "$RUN/queries-$VERSION" ]; then
  echo "reusing stored queries $(tr '\n' ' ' < "$RUN/queries-$VERSION")"
else
  for text in "sound of a rooster" "sound of insects" "car horns in traffic"; do
    "$PSM" query embed --model "$VERSION" --text "$text" --name "$text" | tail -n 1
  done > "$RUN/queries-$VERSION.tmp"
  mv "$RUN/queries-$VERSION.tmp" "$RUN/queries-$VERSION"
  echo "stored queries $(tr '\n' ' ' < "$RUN/queries-$VERSION")"
fi

step "7/7 dashboard on http://localhost:$PORT"
if [ -f "$RUN/dashboard.pid" ] && kill -0 "$(cat "$RUN/dashboard.pid")" 2>/dev/null; then
  echo "dashboard already running (pid $(cat "$RUN/dashboard.pid"))"
else
  nohup "$BIN/streamlit" run dashboard/app.py --server.port "$PORT" \
    --server.headless true --browser.gatherUsageStats false > "$RUN/dashboard.log" 2>&1 &
  echo $! > "$RUN/dashboard.pid"
fi
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$PORT/_stcore/health" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/_stcore/health" >/dev/null \
  || { echo "the dashboard did not come up; see $RUN/dashboard.log" >&2; exit 1; }
printf '\n\033[1;32mPSM Maps is up: http://localhost:%s  (model %s). Stop it with `make stop`.\033[0m\n' "$PORT" "$VERSION"
