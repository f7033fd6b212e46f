#!/usr/bin/env bash
# Time `make demo` as a new user meets it: clone this repository's committed HEAD into a
# scratch folder outside it, run `make demo` there (venv creation included), and print the
# whole wall time, the venv + system-package part, and the demo's `python -m deploy` (its
# results.json run.wall_s), with the load average around it (timings on a shared machine
# are noisy: run it when the machine is quiet, and more than once).
#
#   bash scripts/time_demo.sh [SCRATCH_DIR]      # default: a new mktemp -d folder
#
# The clone reuses what any fresh clone on this machine reuses: pip's cache and the QEMU
# sysroot in ~/.cache/armq (built once per machine by android_bench.qemu_setup).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=${1:-$(mktemp -d)}
case "$scratch/" in
    "$repo"/*) echo "time_demo.sh: error: $scratch is inside the repository; give a folder outside it" >&2
               exit 2 ;;
esac
clone="$scratch/armq-demo"
rm -rf "$clone"
git clone -q "$repo" "$clone"
echo "time_demo: commit $(git -C "$clone" rev-parse --short HEAD), $(nproc) CPUs, load average" \
     "at start $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
( cd "$clone" && make demo ) > "$scratch/make-demo.log" 2>&1 || {
    echo "time_demo.sh: error: make demo failed (log: $scratch/make-demo.log)" >&2
    tail -5 "$scratch/make-demo.log" >&2
    exit 1
}
end=$(date +%s.%N)
results=$(ls -d "$clone"/runs/2*/results.json | tail -1)
"$clone/.venv/bin/python" - "$start" "$end" "$results" <<'EOF'
import json, sys

start, end, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
doc = json.load(open(path))
total, deploy = end - start, doc["run"]["wall_s"]
st = doc["stages"]
print(f"make demo (fresh clone, venv included): {total:.1f} s")
print(f"  venv + sysdeps + make:                 {total - deploy:.1f} s")
print(f"  python -m deploy --sweep deploy/demo.toml: {deploy:.1f} s wall, "
      f"{sum(s.get('cpu_seconds') or 0 for s in st):.1f} s CPU in {len(st)} stages "
      f"({sum(s['status'] == 'ok' for s in st)} ok), run {doc['run']['status']}")
print("  stage kinds: " + ", ".join(dict.fromkeys(s["kind"] for s in st if s["status"] == "ok"))
      + (", report" if (doc.get("report") or {}).get("html") else ""))
EOF
echo "time_demo: load average at end $(cut -d' ' -f1-3 /proc/loadavg); log $scratch/make-demo.log"
