#!/usr/bin/env bash
# Fuzzing smoke test for CI: builds every cargo-fuzz target, replays the regression inputs in
# fuzz/regressions/TARGET/, then fuzzes each target briefly from its seeds
# (fuzz/seeds/TARGET/). Any crash, panic, sanitizer report or timeout fails the script.
#
#   bash fuzz/smoke.sh                      # FUZZ_SECONDS (default 20) per target
#   FUZZ_SECONDS=60 bash fuzz/smoke.sh
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 unlocks them on the stable toolchain.
# The build goes to FUZZ_TARGET_DIR (default ~/.cache/chat-fuzz/target, outside the work tree)
# so a later run on the same machine, even from a fresh clone, reuses the compiled
# dependencies.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."

seconds="${FUZZ_SECONDS:-20}"
target_dir="${FUZZ_TARGET_DIR:-${HOME:-/tmp}/.cache/chat-fuzz/target}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$SECONDS

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

mapfile -t targets < <(cargo fuzz list)
echo "==> building ${targets[*]}"
cargo fuzz build --target-dir "$target_dir"
built=$SECONDS

# The panic message or sanitizer report, then the end of the log (input and artifact name).
show_failure() {
  grep -E -A6 'panicked at|ERROR: AddressSanitizer|ERROR: LeakSanitizer|ERROR: libFuzzer: timeout' "$1" \
    | head -n 40 >&2 || true
  echo "    ..." >&2
  tail -n 8 "$1" >&2
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
for t in "${targets[@]}"; do
  artifacts="$work/artifacts/$t"
  mkdir -p "$artifacts" "$work/corpus/$t"
  common=(-timeout=10 -artifact_prefix="$artifacts/" -print_final_stats=1)
  if compgen -G "$fuzz_dir/regressions/$t/*" >/dev/null; then
    echo "==> $t: replaying fuzz/regressions/$t"
    # File arguments: libFuzzer runs each once and exits.
    if ! cargo fuzz run --target-dir "$target_dir" "$t" "$fuzz_dir/regressions/$t"/* -- \
        "${common[@]}" >"$work/$t.regressions.log" 2>&1; then
      echo "FAIL: $t: a regression input crashes again:" >&2
      show_failure "$work/$t.regressions.log"
      failed=1
      continue
    fi
    grep -c '^Executed ' "$work/$t.regressions.log" | sed 's/^/    inputs replayed: /'
  fi
  echo "==> $t: fuzzing for ${seconds}s from fuzz/seeds/$t"
  # New inputs go to the scratch corpus (the first directory); the seeds are only read.
  rc=0
  cargo fuzz run --target-dir "$target_dir" "$t" "$work/corpus/$t" "$fuzz_dir/seeds/$t" -- \
    -max_total_time="$seconds" "${common[@]}" >"$work/$t.log" 2>&1 || rc=$?
  grep -E '^(Done |stat::number_of_executed_units|SUMMARY)|panicked at|ERROR: ' "$work/$t.log" \
    | sed 's/^/    /' || true
  if [ "$rc" -ne 0 ] || compgen -G "$artifacts/*" >/dev/null; then
    echo "FAIL: $t crashed (exit $rc):" >&2
    show_failure "$work/$t.log"
    for a in "$artifacts"/*; do
      [ -e "$a" ] || continue
      mkdir -p "$fuzz_dir/artifacts/$t"
      cp "$a" "$fuzz_dir/artifacts/$t/"
      echo "crash input kept as fuzz/artifacts/$t/$(basename "$a")" >&2
    done
    failed=1
  fi
done

echo "==> fuzz smoke: build $((built - start))s, total $((SECONDS - start))s"
if [ "$failed" -ne 0 ]; then
  echo "fuzz smoke: FAILED" >&2
  exit 1
fi
echo "fuzz smoke: ${#targets[@]} targets, no crash"
