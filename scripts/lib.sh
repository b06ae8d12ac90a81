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

# Jupyter Book's HTML build, as scripts/build_book.sh runs it: every page re-read, warnings as
# errors, and Sphinx keeps going so that one build reports them all. --quiet leaves out Sphinx's
# status lines, among them the MyST and MyST-NB configurations dumped in full; warnings and
# errors are still printed. Arguments: the book's folder, then --path-output DIR.
JB_BUILD=(jupyter-book build --builder html --all -W --keep-going --quiet)

# sha256 of the given files, one hash for all of them.
hash_files() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Run a command as root: directly when root, through sudo when that needs no password.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else die "need root to run: $* (run it yourself, then retry)"
  fi
}

# apt_install PACKAGE...: the packages and what they depend on, nothing more. No recommended
# packages, and nothing already installed is upgraded (apt-get --no-upgrade; when a package
# needs a newer version of an installed one, nothing is done and the script stops). apt-get's
# own plan (a dry run) is printed before anything is installed.
apt_install() {
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q)
  local flags=(--no-install-recommends --no-upgrade)
  say "--- installing $* from Debian (as root): apt-get update, then apt-get install ${flags[*]} $*"
  as_root "${apt[@]}" update
  local plan new upgrade
  plan="$(as_root "${apt[@]}" install --simulate "${flags[@]}" "$@")"
  new="$(awk '$1 == "Inst" && $3 !~ /^\[/ { print $2 }' <<<"$plan" | xargs)"
  upgrade="$(awk '$1 == "Inst" && $3 ~ /^\[/ { print $2 }' <<<"$plan" | xargs)"
  if [ -n "$upgrade" ]; then
    die "installing $* would upgrade packages already installed ($upgrade), so nothing was" \
      "installed: install $* yourself (for the site test, CHROMIUM can name a browser instead)"
  fi
  if [ -z "$new" ]; then
    say "    nothing to install"
    return
  fi
  say "    new packages: $new"
  as_root "${apt[@]}" install -y "${flags[@]}" "$@"
}

# ensure_browser: a Chromium for the site test. $CHROMIUM (a path or a command) when set, and
# nothing is installed; else Debian's $DEBIAN_CHROMIUM, installed by apt_install when missing.
DEBIAN_CHROMIUM="${DEBIAN_CHROMIUM:-/usr/bin/chromium}"
ensure_browser() {
  if [ -n "${CHROMIUM:-}" ]; then
    command -v "$CHROMIUM" >/dev/null || die "CHROMIUM=$CHROMIUM is not an executable browser"
    say "--- browser: CHROMIUM=$CHROMIUM ($("$CHROMIUM" --version 2>/dev/null || echo '?'))"
  elif [ -x "$DEBIAN_CHROMIUM" ]; then
    say "--- browser: $DEBIAN_CHROMIUM ($("$DEBIAN_CHROMIUM" --version 2>/dev/null || echo '?'))"
  else
    say "--- no browser for the site test: $DEBIAN_CHROMIUM is missing and CHROMIUM is not set"
    apt_install chromium
  fi
}
