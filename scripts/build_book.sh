#!/usr/bin/env bash
# Build the HTML book into _build/html, from a staging copy in _build/src/ (_config.yml,
# _toc.yml, book/ and the vendored web assets), so the committed notebooks are never modified.
#
#   scripts/build_book.sh --execute [--profile auto|ci|full] [--timeout SECONDS]
#       (make book) papermill executes every chapter of _toc.yml into the staging copy first,
#       failing on any cell error or on a cell running past the timeout
#   scripts/build_book.sh
#       (make test) renders the committed outputs as they are (execute_notebooks: "off")
#
# Sphinx runs with warnings as errors and keeps going, so one build reports every problem.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

EXECUTE=0 PROFILE=auto TIMEOUT=600
while [ $# -gt 0 ]; do
  case "$1" in
    --execute) EXECUTE=1 ;;
    --profile) PROFILE="$2"; shift ;;
    --timeout) TIMEOUT="$2"; shift ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done

SRC="$ROOT/_build/src"
rm -rf "$SRC" "$ROOT/_build/html"
mkdir -p "$SRC"
cp _config.yml _toc.yml "$SRC/"
tar -C "$ROOT" --exclude=_build --exclude=.ipynb_checkpoints -cf - book | tar -C "$SRC" -xf -
"$ROOT/scripts/vendor_web.sh" "$SRC/_web"

if [ "$EXECUTE" = 1 ]; then
  "$PY" "$ROOT/scripts/execute_notebooks.py" --out "$SRC" --profile "$PROFILE" --timeout "$TIMEOUT"
fi

# JB_BUILD (scripts/lib.sh) has --all: every page re-read, so warnings of unchanged pages are
# reported again (with -W a second build must not pass just because Sphinx kept the first one's
# results).
"${JB_BUILD[@]}" "$SRC" --path-output "$ROOT"
say "--- site: _build/html/index.html"
