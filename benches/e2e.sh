#!/usr/bin/env bash
# End to end against the baseline: generate the reference workload, run `logmill replay` and
# `mtail --one_shot` on the same files, check that every series has the same value, and print
# lines per CPU-second (user + sys, median of RUNS) and the ratio.
#
#   benches/e2e.sh                 # 2,000,000 lines of each workload
#   N=200000 RUNS=1 benches/e2e.sh
#
# Needs GNU time (/usr/bin/time), python3, and mtail for the comparison (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000000}
RUNS=${RUNS:-3}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
cargo build --release -q
bin=target/release/logmill

cpu() { # prints user+sys seconds of a command, discarding its output
  /usr/bin/time -f "%U %S" -o "$OUT/time" "$@" >/dev/null 2>&1
  awk '{printf "%.3f\n", $1 + $2}' "$OUT/time"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf "%-6s %12s %14s %14s %8s\n" workload lines "logmill l/cs" "mtail l/cs" ratio
for kind in nginx json; do
  log="$OUT/$kind.log"
  [ -s "$log" ] && [ "$(wc -l <"$log")" -eq "$N" ] || "$bin" gen "$kind" "$N" >"$log"
  ours=$(for _ in $(seq "$RUNS"); do cpu "$bin" replay -q --rules "benches/rules/$kind.yaml" --metrics-out "$OUT/$kind.logmill.prom" "$log"; done | median)
  "$bin" replay -q --rules "benches/rules/$kind.yaml" --metrics-out "$OUT/$kind.logmill.prom" "$log"
  theirs="-"
  ratio="-"
  if command -v mtail >/dev/null; then
    rm -rf "$OUT/progs" && mkdir -p "$OUT/progs"
    if [ -f "../shared/bench/mtail/$kind.mtail" ]; then
      cp "../shared/bench/mtail/$kind.mtail" "$OUT/progs/"
      mt=(mtail --one_shot --one_shot_format prometheus --logtostderr --port 0 --progs "$OUT/progs" --logs "$log")
      "${mt[@]}" >"$OUT/$kind.mtail.prom" 2>/dev/null
      python3 benches/compare.py "$OUT/$kind.logmill.prom" "$OUT/$kind.mtail.prom" >&2
      theirs=$(for _ in $(seq "$RUNS"); do cpu "${mt[@]}"; done | median)
    fi
  fi
  rate() { awk -v n="$N" -v s="$1" 'BEGIN {printf "%.0f k", n / s / 1000}'; }
  [ "$theirs" != "-" ] && ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.1fx", b / a}')
  printf "%-6s %12s %14s %14s %8s\n" "$kind" "$N" "$(rate "$ours")" "$([ "$theirs" = - ] && echo - || rate "$theirs")" "$ratio"
done

# Memory with 100,000 live series: one counter per (route, service), capped at 100,000.
/usr/bin/time -f "%M" -o "$OUT/time" "$bin" replay -q --rules benches/rules/cardinality.yaml \
  --metrics-out "$OUT/cardinality.prom" "$OUT/json.log"
series=$(grep -c '^route_requests_total' "$OUT/cardinality.prom")
echo "memory: $series series, max resident $(awk '{printf "%.1f MiB", $1 / 1024}' "$OUT/time")"

# GNU grep with the nginx regex and no captures, as a yardstick for a plain regex scan.
re='^(\S+) \S+ \S+ \[([^]]+)\] "([A-Z]+) (\S+) ([^"]+)" ([0-9]{3}) ([0-9]+) "([^"]*)" "([^"]*)" ([0-9]+\.[0-9]+)$'
# grep's output goes to a file: writing to /dev/null, GNU grep stops at the first match.
g=$(for _ in $(seq "$RUNS"); do cpu sh -c 'LC_ALL=C grep -cE "$1" "$2" >"$3"' _ "$re" "$OUT/nginx.log" "$OUT/grep.count"; done | median)
echo "grep -cE (LC_ALL=C) on nginx: $(awk -v n="$N" -v s="$g" 'BEGIN {printf "%.0f k", n / s / 1000}') lines per CPU-second"

# Reduction (issue 7): the mixed workload with every action on (benches/rules/reduce.yaml)
# against the same rules without their `reduce` blocks, wall time and CPU (median of RUNS).
# Each run writes a fresh kept file: truncating the one before would charge it with freeing
# that run's page cache (the plain run's is four times the size, ~6 ms per 500,000 lines).
mixed="$OUT/mixed.log"
[ -s "$mixed" ] && [ "$(wc -l <"$mixed")" -eq "$N" ] || "$bin" gen mixed "$N" >"$mixed"
awk '/^    reduce:/{skip=1; next} skip && /^      /{next} {skip=0; print}' benches/rules/reduce.yaml \
  >"$OUT/plain.yaml"
wall_cpu() { # prints "wall cpu" seconds of a command, discarding its output
  /usr/bin/time -f "%e %U %S" -o "$OUT/time" "$@" >/dev/null 2>&1
  awk '{printf "%.3f %.3f\n", $1, $2 + $3}' "$OUT/time"
}
for rules in "$OUT/plain.yaml" benches/rules/reduce.yaml; do
  runs=$(for _ in $(seq "$RUNS"); do
    rm -f "$OUT/kept.log"
    wall_cpu "$bin" replay -q --rules "$rules" --metrics-out /dev/null --logs-out "$OUT/kept.log" "$mixed"
  done)
  w=$(echo "$runs" | awk '{print $1}' | median)
  c=$(echo "$runs" | awk '{print $2}' | median)
  echo "$rules" "$w" "$c"
done | awk -v n="$N" '
  { name[NR] = $1; wall[NR] = $2; cpu[NR] = $3
    printf "mixed %-28s %8.0f k lines/s %8.0f k lines per CPU-s\n", $1, n / $2 / 1000, n / $3 / 1000 }
  END { printf "reduction on: %.0f%% of plain throughput (wall), %.0f%% (per CPU-second)\n",
        100 * wall[1] / wall[2], 100 * cpu[1] / cpu[2] }'
"$bin" replay --rules benches/rules/reduce.yaml --metrics-out /dev/null --logs-out "$OUT/kept.log" "$mixed" 2>&1 \
  | grep -E '^(events|reduction)'

# Traces (issue 8): `gen traces` through benches/rules/traces-{plain,summaries,retention}.yaml
# (trace context read; per-trace summaries, the service graph and the rules over them; the
# same and trace-aware retention), wall time and CPU (median of RUNS), each against plain.
traces="$OUT/traces.log"
[ -s "$traces" ] && [ "$(wc -l <"$traces")" -eq "$N" ] || "$bin" gen traces "$N" >"$traces"
for r in plain summaries retention; do
  runs=$(for _ in $(seq "$RUNS"); do wall_cpu "$bin" replay -q --clock-ms 1700000000000 \
    --rules "benches/rules/traces-$r.yaml" --metrics-out /dev/null --logs-out "$OUT/kept.log" \
    --traces-out "$OUT/traces.jsonl" "$traces"; done)
  w=$(echo "$runs" | awk '{print $1}' | median)
  c=$(echo "$runs" | awk '{print $2}' | median)
  echo "$r" "$w" "$c"
done | awk -v n="$N" '
  { wall[$1] = $2; cpu[$1] = $3
    printf "traces %-10s %8.0f k lines/s %8.0f k lines per CPU-s\n", $1, n / $2 / 1000, n / $3 / 1000 }
  END { for (r in wall) if (r != "plain")
          printf "%s: %.0f%% of plain throughput (wall), %.0f%% (per CPU-second)\n", r,
            100 * wall["plain"] / wall[r], 100 * cpu["plain"] / cpu[r] }'
