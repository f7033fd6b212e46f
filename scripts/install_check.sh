#!/usr/bin/env bash
# Build armq's wheel, install it into a fresh venv outside the repository and run a short
# end to end pipeline from a temp dir with that install alone (.ci/run calls this after
# `make test`).
#
#   scripts/install_check.sh            # ~8-12 min on 2 cores: pip installing torch, then the
#                                       # README's own-model example (trains, deploys)
#
# What it proves: every subpackage and the package data the code reads at run time are in
# the wheel (nothing is read from the checkout except the two CIFAR-10 archives, passed by
# path), the `armq` console script and the `python -m` forms run, and the export names the
# weights it used on its first line (the shipped checkpoint, found inside the install).
#
# Environment: PY (default python3.11); ARMQ_KEEP=1 keeps the temp dir and prints its path.
# torch is pinned (torch==2.13.0): pip takes the CPU build from the local wheel folder.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-python3.11}
prog=install_check
tmp=$(mktemp -d "${TMPDIR:-/tmp}/armq-install-check.XXXXXX")
if [ "${ARMQ_KEEP:-0}" = 1 ]; then
    echo "$prog: keeping $tmp" >&2
else
    trap 'rm -rf "$tmp"' EXIT
fi
die() { echo "$prog: FAILED: $*" >&2; exit 1; }
# pip, without the local index configuration's "Location '...' is ignored" chatter.
pipq() { "$bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
step() { printf '%s: [%3ss] %s\n' "$prog" "$SECONDS" "$*"; }
# The README example trains on the shared CIFAR-10 (read before the overrides are unset).
shared=${ARMQ_SHARED_DATA:-$repo/../shared/data}
# The run must see the install only: no checkout on the path, no overrides.
unset PYTHONPATH ARMQ_WEIGHTS_DIR ARMQ_SHARED_DATA ARMQ_DEBUG || true
export ORT_DISABLE_TELEMETRY=1
calib=$repo/assets/data/cifar10_calib.tar.gz
test_data=$repo/assets/data/cifar10_test.tar.gz
[ -f "$calib" ] && [ -f "$test_data" ] || die "the CIFAR-10 archives are missing from $repo/assets/data"

step "fresh venv ($PY) in $tmp/venv"
"$PY" -m venv "$tmp/venv"
bin=$tmp/venv/bin
pipq install -q --upgrade pip

step "building the wheel"
# Build dirs go to the temp dir (setuptools reads DIST_EXTRA_CONFIG): the checkout gets no
# build/ or *.egg-info, and no stale build/lib file can slip into the wheel.
printf '[build]\nbuild_base = %s\n[egg_info]\negg_base = %s\n' "$tmp/build" "$tmp" > "$tmp/build.cfg"
mkdir -p "$tmp/build"
DIST_EXTRA_CONFIG=$tmp/build.cfg pipq wheel -q --no-deps -w "$tmp/dist" "$repo"
whl=$(ls "$tmp"/dist/armq-*.whl)
size_kb=$(( $(stat -c %s "$whl") / 1024 ))
step "wheel $(basename "$whl"): ${size_kb} KiB"
[ "$size_kb" -lt 20480 ] || die "the wheel is ${size_kb} KiB (> 20 MiB): did assets/weights get in?"

step "installing the wheel (and its dependencies) into the fresh venv"
pipq install -q "$whl"

work=$tmp/work
mkdir -p "$work"
cd "$work"
export PATH=$bin:$PATH

step "imports come from the install; package data is there"
python - "$repo" <<'EOF' || die "the installed package is incomplete"
import importlib, sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
mods = ["armq", "armq.cli", "zoo", "zoo.list", "export.onnx", "quant.ptq", "quant.evaluate",
        "android_bench", "android_bench.cli", "android_bench.targets", "android_bench.targets.local",
        "android_bench.targets.qemu", "android_bench.compare", "android_bench.qemu_setup",
        "deploy", "deploy.cli"]
for m in mods:
    f = Path(importlib.import_module(m).__file__).resolve()
    assert repo not in f.parents, f"{m} imported from the checkout ({f})"
import armq
from android_bench import qemu_setup
from android_bench.targets import base
from export.weights import weights_dir
site = Path(armq.__file__).resolve().parent.parent
need = [qemu_setup.PLUGIN_SRC, qemu_setup.RUNNER_SRC, base.RUNNER_PATH,
        site / "android_bench" / "device_requirements.txt",
        site / "deploy" / "table8.toml", site / "deploy" / "zoo.toml",
        site / "zoo" / "imagenet_synsets.txt",
        weights_dir() / "shufflenet_v1_g3_cifar10.pt",
        armq.assets_dir() / "data" / "cifar10_test.tar.gz",
        armq.assets_dir() / "data" / "cifar10_calib.tar.gz"]
need += [site / p / "py.typed" for p in ("armq", "zoo", "export", "quant", "android_bench", "deploy")]
missing = [str(p) for p in need if not Path(p).is_file()]
assert not missing, f"missing from the install: {missing}"
from deploy.spec import load_sweep
for sweep in ("deploy/table8.toml", "deploy/zoo.toml"):  # the README's forms, from elsewhere
    assert load_sweep(sweep)["models"], sweep
lic = list(site.glob("armq-*.dist-info/licenses/LICENSE"))
assert lic and "Apache License" in lic[0].read_text(), "LICENSE missing from the dist-info"
print("ok:", len(mods), "modules,", len(need), "data files, LICENSE")
EOF

step "armq --version / armq list"
v=$(armq --version) || die "armq --version failed"
echo "$v"
want=$(python -c 'import importlib.metadata as m; print(m.version("armq"))')
[ "$v" = "armq $want" ] || die "armq --version printed '$v', not 'armq $want'"
armq list > "$work/armq_list.txt" || die "armq list failed"
python -m zoo.list > "$work/zoo_list.txt" || die "python -m zoo.list failed"
cmp -s "$work/armq_list.txt" "$work/zoo_list.txt" || die "armq list and python -m zoo.list differ"
grep -q shufflenet_v1 "$work/zoo_list.txt" || die "python -m zoo.list does not list shufflenet_v1"

art=$tmp/art
name=shufflenet_v1_g3_w1_cifar10
step "python -m export.onnx --model shufflenet_v1 --groups 3 --dataset cifar10"
python -m export.onnx --model shufflenet_v1 --groups 3 --dataset cifar10 --out "$art" \
    > "$work/export.out" 2> "$work/export.err" || { cat "$work/export.err" >&2; die "export.onnx failed"; }
cat "$work/export.out"
first=$(head -n 1 "$work/export.out")
case "$first" in
    "weights: "*"shufflenet_v1_g3_cifar10.pt (shipped checkpoint"*) ;;
    *) die "export's first line does not name the shipped checkpoint: $first" ;;
esac
cat "$work/export.err" >&2
! grep -q -e "random-init" -e "images found" "$work/export.err" \
    || die "export.onnx fell back to random weights or random parity inputs (see above)"
[ -f "$art/$name.onnx" ] || die "no $art/$name.onnx"

step "python -m quant.ptq (ONNX Runtime, 64 calibration images)"
python -m quant.ptq --model "$art/$name.onnx" --backend ort --calib "$calib" --num-calib 64 \
    --out "$art" || die "quant.ptq failed"
[ -f "$art/$name.int8.onnx" ] || die "no $art/$name.int8.onnx"

step "python -m quant.evaluate (100 labelled test images)"
python -m quant.evaluate --model "$art/$name.int8.onnx" --data "$test_data" --limit 100 \
    || die "quant.evaluate failed"

step "python -m android_bench --target local --runs 3 (float and INT8)"
python -m android_bench --model "$art/$name.onnx" "$art/$name.int8.onnx" --target local --runs 3 \
    --json "$work/b.json" \
    || die "android_bench failed"
[ -s "$work/b.json" ] || die "android_bench wrote no $work/b.json"
armq compare "$work/b.json" || die "armq compare (android_bench.compare) failed on b.json"

step "README 'Your own model', verbatim, from an empty folder (train, export, INT8, bench, deploy)"
[ -f "$shared/cifar10/train.tar" ] || die "no $shared/cifar10/train.tar (set ARMQ_SHARED_DATA)"
# The example makes TFLite models too: the wheel's [tflite] extra, as the README says.
pipq install -q "$whl[tflite]"
own=$tmp/own
mkdir -p "$own"
python "$repo/scripts/readme_block.py" "$repo/README.md" "## Your own model" > "$own/own.sh" \
    || die "no 'Your own model' block in README.md"
(cd "$own" && ARMQ_SHARED_DATA=$shared bash -euo pipefail own.sh > own.log 2>&1) \
    || { tail -n 30 "$own/own.log" >&2; die "the README's own-model example failed"; }
grep -q "^trained 200 steps" "$own/own.log" || die "the example did not train"
ls "$own"/runs/*/report.html > /dev/null || die "the example's deploy wrote no report"
[ -f "$own/art/mycnn_cifar10.int8.tflite" ] || die "the example made no TFLite INT8 model"

step "all checks passed (wall ${SECONDS} s)"
