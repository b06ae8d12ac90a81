#!/usr/bin/env bash
# Run the full profile of several experiments side by side on one GPU and collect their records.
#   scripts/run_full.sh OUT_DIR NAME [NAME ...]
# Each experiment runs in its own process, `python -m ssm.experiments NAME --profile full`
# (small models leave most of a GPU idle, so a few share one well); its record goes to
# OUT_DIR/NAME.json and its log to OUT_DIR/NAME.log, with the wall time of each at the end.
# Exits with the first failure's status. Copy the records to data/results/ to commit them.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: scripts/run_full.sh OUT_DIR NAME [NAME ...]" >&2; exit 2; }
out="$1"; shift
mkdir -p "$out"
PY="${PYTHON:-python3}"
pids=()
for name in "$@"; do
  ( start=$(date +%s)
    "$PY" -m ssm.experiments "$name" --profile full --out-dir "$out" > "$out/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/$name.log"
    exit $rc ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { rc=$?; [ "$status" = 0 ] && status=$rc; }
done
exit $status
