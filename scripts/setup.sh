#!/usr/bin/env bash
# Set up everything the book and the tests need, inside the repository:
#   .venv/          python venv: torch first (a CPU build unless one is already there),
#                   then the package with its book and test extras (pip install -e ".[book,test]")
#   node_modules/   MathJax 3, the Jupyter widgets HTML manager and RequireJS (npm ci), which
#                   the built site serves itself so that it works offline
#   a browser       only with --browser (the site test needs it): $CHROMIUM when set, else
#                   /usr/bin/chromium, installed from Debian when missing (see apt_install:
#                   no recommended packages, nothing already installed is upgraded)
#
# Idempotent and quick the second time: each part is skipped while a stamp file holds the hash
# of what it was installed from (pyproject.toml and this script; package-lock.json).
#
# Environment:
#   PYTHON          interpreter that creates the venv (default: python3.11, else python3)
#   TORCH_SPEC      the torch requirement installed first (default: torch==2.13.0)
#   TORCH_PIP_ARGS  extra pip arguments for that install only, e.g.
#                   "--index-url https://download.pytorch.org/whl/cpu" where pip has no local
#                   CPU wheel and would otherwise pick the (multi-GB) CUDA build from PyPI
#   CHROMIUM        a Chromium (path or command) for the site test; nothing is installed then
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --browser) BROWSER=1 ;;
    *) die "unknown argument $arg (expected --browser)" ;;
  esac
done

TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_PIP_ARGS="${TORCH_PIP_ARGS:-}"

# --- python ------------------------------------------------------------------------------------
if [ ! -x "$PY" ]; then
  base="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
  [ -n "$base" ] || die "no python3 found; install python 3.10 or newer"
  say "--- creating $VENV with $base"
  if ! "$base" -m venv "$VENV"; then
    # Debian's python3 ships venv support in a separate package.
    rm -rf "$VENV"
    apt_install "python3-venv"
    "$base" -m venv "$VENV"
  fi
fi

py_stamp="$VENV/.setup-stamp"
py_hash="$(hash_files pyproject.toml scripts/setup.sh) $TORCH_SPEC $TORCH_PIP_ARGS"
installed() { "$PY" -c "import importlib.metadata as m, torch; m.version('ssm-companion')"; }
if [ "$(cat "$py_stamp" 2>/dev/null)" != "$py_hash" ] || ! installed 2>/dev/null; then
  say "--- pip install $TORCH_SPEC (first, so that the package's torch>=2.4 is already met)"
  # shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of words on purpose
  "$PY" -m pip install -q $TORCH_PIP_ARGS "$TORCH_SPEC"
  say "--- pip install -e .[book,test]"
  "$PY" -m pip install -q -e ".[book,test]"
  echo "$py_hash" > "$py_stamp"
else
  say "--- python environment up to date ($VENV)"
fi

# --- web assets ---------------------------------------------------------------------------------
command -v npm >/dev/null || apt_install npm
npm_stamp="node_modules/.setup-stamp"
npm_hash="$(hash_files package.json package-lock.json)"
if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$npm_hash" ]; then
  say "--- npm ci (web assets the site serves itself)"
  # --ignore-scripts: only files are copied out of these packages, nothing is built.
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$npm_hash" > "$npm_stamp"
else
  say "--- web assets up to date (node_modules)"
fi

# --- browser for the site test -----------------------------------------------------------------
if [ "$BROWSER" = 1 ]; then
  ensure_browser
fi
