#!/usr/bin/env bash
# Build the cargo-fuzz targets and run each for a bounded time (FUZZ_SECONDS, default 60) as a
# single libFuzzer process (one core), starting from the checked-in seeds (fuzz/seeds/<target>/)
# copied into a scratch corpus (fuzz/corpus/<target>/, gitignored). Prints the executions per target; exits non-zero if any
# target crashed (the input is left in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh                  # all targets, 60 s each
#   FUZZ_SECONDS=10 fuzz/run.sh frames scram
#
# Needs: rustup nightly toolchain, cargo install cargo-fuzz.
set -euo pipefail

cd "$(dirname "$0")"
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(config startup frames scram)
fi

for t in "${TARGETS[@]}"; do cargo +nightly fuzz build -O "$t"; done

declare -A EXECS RESULT
fail=0
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    log=$(mktemp)
    echo "== $t: ${SECONDS_EACH}s"
    set +e
    # stdin from /dev/null: nothing a target does may wait on the terminal
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" </dev/null >"$log" 2>&1
    rc=$?
    set -e
    n=$(grep -oE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | tr -dc 0-9 || true)
    [ -n "$n" ] || n=$(awk -F: '/stat::number_of_executed_units/ {gsub(/ /, "", $2); print $2}' "$log" | tail -1 || true)
    EXECS[$t]=${n:-?}
    if [ $rc -eq 0 ]; then
        RESULT[$t]=ok
    else
        RESULT[$t]="CRASH (rc $rc)"
        fail=1
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 || true
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::' "$log" || tail -5 "$log"
    rm -f "$log"
done

echo
printf '%-10s %12s %8s  %s\n' target execs seconds result
for t in "${TARGETS[@]}"; do
    printf '%-10s %12s %8s  %s\n' "$t" "${EXECS[$t]}" "$SECONDS_EACH" "${RESULT[$t]}"
done
exit $fail
