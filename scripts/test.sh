#!/usr/bin/env bash
# Every check of the repository, in order (make test, and .ci/run):
#   setup | ruff check | ruff format --check | pytest tests/ | nbval over book/ |
#   build the HTML from the committed outputs | site test in headless Chromium
# Each step prints a header and its wall time. A failed step does not hide the next ones
# (the site test needs the build, so it is skipped when the build failed); the exit status is
# non-zero when any step failed. pytest's "no tests collected" (exit 5) is a failure too.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

failed=()
summary=()

step() {  # step NAME COMMAND...
  local name="$1"; shift
  printf '\n======== %s\n$ %s\n' "$name" "$*"
  local start=$SECONDS rc=0
  "$@" || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" = 0 ]; then
    printf -- '-------- %s: ok (%d s)\n' "$name" "$took"
    summary+=("ok      ${took}s  $name")
  else
    printf -- '-------- %s: FAILED, exit %d (%d s)\n' "$name" "$rc" "$took"
    summary+=("FAILED  ${took}s  $name (exit $rc)")
    failed+=("$name")
  fi
  return "$rc"
}

# Without its set-up nothing else can run.
step "setup" "$ROOT/scripts/setup.sh" --browser || exit 1

step "ruff check" ruff check . || true
step "ruff format --check" ruff format --check . || true
step "unit and property tests" pytest tests/ || true
step "notebooks (nbval: text outputs)" pytest --nbval book/ --nbval-current-env \
  --nbval-sanitize-with tests/nbval_sanitize.cfg || true
if step "build the book (committed outputs)" "$ROOT/scripts/build_book.sh"; then
  step "site test (headless Chromium, offline)" pytest tests/site -m site || true
else
  summary+=("SKIPPED     site test (the build failed)")
  failed+=("site test")
fi

printf '\n======== summary (%d s)\n' "$SECONDS"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "$(IFS=,; echo "${failed[*]}")"
  exit 1
fi
echo "all checks passed"
