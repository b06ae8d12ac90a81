# Helpers shared by the scripts in this folder. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# Tools of the venv (ruff, pytest, papermill, jupyter-book) come first on PATH, and a kernel
# started by papermill or nbval runs the venv's python.
export PATH="$VENV/bin:$PATH"
# No telemetry, no "you should upgrade" noise in logs.
export PIP_DISABLE_PIP_VERSION_CHECK=1 NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# sha256 of the given files, one hash for all of them.
hash_files() { cat "$@" | sha256sum | cut -d' ' -f1; }
