#!/usr/bin/env bash
# The GPU check, prepared for a session that is lent a device machine (one H100 or H200, 16 CPU cores, no network,
# jax with CUDA but no envpool or tyro), to spend its few minutes measuring rather than setting up:
#
#   here, once:  ../shared/tools/offline-site.sh .offline-site tyro==1.0.17 docstring-parser==0.18.0 \
#                  typeguard==4.6.1 tensorboardX==2.6.5 && echo /.offline-site/ >> .git/info/exclude
#   there:       bash benchmarks/device_check.sh      (device run, carry [".offline-site"], timeout_s 560)
#
# Stages, each logged under $OUT (or ./device_check when OUT is unset): the devices JAX sees; the gpu-marked tests;
# IMPALA's and PPO's Atari throughput against raw envpool (python -m benchmarks.throughput: alternating, after
# compilation); `python run_impala.py` on Pong (its defaults: PARL's setting, actors from the machine's cores) for
# IMPALA_SECONDS of wall time, whose progress.csv gives steps/s and the return reached (time to 18 if it gets there).
# A table of the stages is printed last (exit 124: stopped at its bound, as the IMPALA run always is). STAGE_SECONDS
# bounds each of the first stages. Tried on the 2-core CPU (OUT=/tmp/dc STAGE_SECONDS=45 IMPALA_SECONDS=60): 1m50s.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.offline-site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${OUT:-device_check}
mkdir -p "$out"
py=${PYTHON:-python3}
stage_s=${STAGE_SECONDS:-120}
impala_s=${IMPALA_SECONDS:-180}
declare -a rows

stage() {  # name, command...: runs it under the stage bound, logs it, adds a row with its exit code and time
  local name=$1; shift
  local t0=$SECONDS
  timeout "$stage_s" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  rows+=("| $name | $rc | $((SECONDS - t0)) s | $(tail -n 1 "$out/$name.log" | cut -c1-100) |")
}

stage devices "$py" -c "import jax; print(jax.default_backend(), jax.devices())"
stage gpu_tests "$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_placement.py
stage throughput "$py" -m benchmarks.throughput --setting impala --setting atari --repeats 3 \
  --json "$out/throughput.json"

t0=$SECONDS
timeout -s TERM "$impala_s" "$py" run_impala.py --env Pong-v5 --run-dir "$out/impala_pong" --no-progress \
  --eval-every 0 > "$out/impala_pong.log" 2>&1
rc=$?
cp "$out/impala_pong/progress.csv" "$out/impala_pong.csv" 2>/dev/null
rm -rf "$out/impala_pong"  # checkpoints and events do not come back: progress.csv holds the curve
summary=$("$py" - "$out/impala_pong.csv" <<'PY'
import csv, math, sys
try:
  rows = list(csv.DictReader(open(sys.argv[1])))
except OSError:
  sys.exit(print("no progress.csv"))
ret = lambda r: float(r["episode_return"] or "nan")
last = rows[-1] if rows else None
first18 = next((r for r in rows if not math.isnan(ret(r)) and ret(r) >= 18), None)
steps, wall = (int(last["global_step"]), float(last["walltime"])) if last else (0, 1.0)
r = ret(last) if last else math.nan
print(f"{steps:,} steps in {wall:.0f} s ({steps / max(wall, 1e-9):,.0f}/s); return {r:.1f}; "
      + (f"18 first at {float(first18['walltime']) / 60:.1f} min" if first18 else "18 not reached"))
PY
)
rows+=("| impala_pong | $rc | $((SECONDS - t0)) s | $summary |")

{
  echo
  echo "| stage | exit | time | last line |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$out/table.md"
