#!/usr/bin/env bash
# Run armq's on-device runner in the arm64 container on one model.
#
#   docker/run.sh MODEL [runner options...]
#   docker/run.sh artifacts/x.int8.onnx --threads 1 --warmup 10 --runs 100
#
# MODEL (.onnx or .tflite): its folder is mounted read-only at /models, and its card
# (<stem>.json beside it) is passed with --card when present; give inputs as
# --inputs /models/<file>.npy. The result JSON lands in $ARMQ_OUT (default
# ./bench-out) as <model file>.docker.json.
#
# Environment: ARMQ_IMAGE (default armq-runner:arm64); ARMQ_BUILD=1 rebuilds the
# image (it is built anyway when missing) from docker/Dockerfile.arm64.
# On a non-arm64 host the container is emulated (QEMU binfmt): its times are not ARM
# latency, and a warning says so.
set -euo pipefail

prog=$(basename "$0")
die() { echo "$prog: error: $*" >&2; exit 2; }

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    [ $# -ge 1 ] && exit 0
    exit 2
fi

model=$1
shift
[ -f "$model" ] || die "model file $model not found"
case "$model" in
    *.onnx | *.tflite) ;;
    *) die "$model: not an .onnx or .tflite model" ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
model_dir=$(cd "$(dirname "$model")" && pwd)
model_file=$(basename "$model")
stem=${model_file%%.*}
card_args=()
if [ -f "$model_dir/$stem.json" ]; then
    card_args=(--card "/models/$stem.json")
fi
out_dir=${ARMQ_OUT:-$PWD/bench-out}
mkdir -p "$out_dir" || die "cannot create $out_dir"
out_dir=$(cd "$out_dir" && pwd)
image=${ARMQ_IMAGE:-armq-runner:arm64}

command -v docker >/dev/null 2>&1 || die "docker not found (install Docker Engine, or use python -m android_bench --target qemu)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running, and may $(id -un) use it?)"

if [ "${ARMQ_BUILD:-0}" = 1 ] || ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "$prog: building $image (linux/arm64)" >&2
    docker build --platform linux/arm64 -f "$repo/docker/Dockerfile.arm64" -t "$image" "$repo" >&2
fi

case "$(uname -m)" in
    aarch64 | arm64) ;;
    *) echo "$prog: warning: $(uname -m) host: the arm64 container is emulated; its times are NOT ARM latency" >&2 ;;
esac

exec docker run --rm --platform linux/arm64 --network none \
    --user "$(id -u):$(id -g)" \
    -v "$model_dir:/models:ro" -v "$out_dir:/out" \
    "$image" --model "/models/$model_file" ${card_args[@]+"${card_args[@]}"} \
    --json "/out/$model_file.docker.json" "$@"
