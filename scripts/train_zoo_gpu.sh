#!/usr/bin/env bash
# Train the zoo's untrained seed models side by side on one CUDA GPU with `zoo.train --device cuda`
# (the provenance of the GPU-trained checkpoints in assets/weights/; see README "Trained zoo").
#
#   bash scripts/train_zoo_gpu.sh DATA_NPZ OUT_DIR [BUDGET_S]
#
# DATA_NPZ holds CIFAR-10's JPEG bytes (train + a test sample; scripts/pack_cifar_npz.py makes
# it: one file that travels to a GPU machine faster than 60,000 small ones); it is unpacked to
# an ImageFolder tree, then every model trains in its own process with the same recipe (the
# shared GPU checkpoints' recipe: batch 512, peak lr 0.4, 2 warm-up epochs, cosine, cutout 16,
# bf16 autocast) and a wall-clock budget that fixes each run's epoch count after its warm-up.
# Results: OUT_DIR/<tag>.pt (float32), <tag>.pt.log.jsonl, <tag>.stderr.
set -uo pipefail
NPZ=${1:?data npz}; OUT=${2:?output dir}; BUDGET=${3:-400}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}          # DEVICE=cpu EXTRA="--limit-train 256" for a smoke run without a GPU
BF16=$([ "$DEVICE" = cuda ] && echo --bf16)
mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/armq-cifar-XXXX)
trap 'rm -rf "$DATA"' EXIT
"$PY" scripts/pack_cifar_npz.py --unpack "$NPZ" "$DATA" || exit 1
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# One decode for all: the first process fills the decoded-image cache, the others read it.
export ARMQ_CACHE=${ARMQ_CACHE:-/tmp/armq-cache}
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
"$PY" - "$DATA" <<'EOF' || exit 1
import sys
from pathlib import Path
from zoo._registry import create_model, resolve_variant
from zoo.train import cached_images, find_split
cfg = create_model(resolve_variant("shufflenet_v1", "cifar10", groups=3)).default_cfg
for split in ("train", "test"):
    d = cached_images(find_split(Path(sys.argv[1]), split), cfg.input_size, cfg.resize, cfg.class_names)
    print(split, d.images.shape)
EOF

MODELS=(
  "mobilenet_v1" "mobilenet_v2" "mobilenet_v3_small"
  "shufflenet_v1 --groups 1" "shufflenet_v1 --groups 2" "shufflenet_v1 --groups 4"
  "shufflenet_v1 --groups 8" "shufflenet_v1 --groups 3 --width 0.5"
  "shufflenet_v1 --groups 3 --width 2.0" "shufflenet_v2 --width 1.0"
  "ghostnet" "mobilenext" "shiftnet" "hetconv_vgg16 --part 1"
)
pids=()
for spec in "${MODELS[@]}"; do
  tag=$(echo "$spec" | tr -d '-' | tr ' ' '_' | tr -s '_')
  # shellcheck disable=SC2086
  "$PY" -m zoo.train --model $spec --dataset cifar10 --data "$DATA" --device "$DEVICE" $BF16 ${EXTRA:-} \
      --batch-size 512 --lr 0.4 --warmup-epochs 2 --cutout 16 --epochs 60 --eval-every 5 \
      --threads 1 --time-budget "$BUDGET" --out "$OUT/$tag.pt" \
      >"$OUT/$tag.stdout" 2>"$OUT/$tag.stderr" &
  pids+=($!)
done
# A run that outlives its budget by a minute is stopped: its last finished epoch is kept.
( sleep "$(( BUDGET + 60 ))"; kill "${pids[@]}" 2>/dev/null ) &
watchdog=$!
fail=0
for pid in "${pids[@]}"; do wait "$pid" || fail=$((fail + 1)); done
kill "$watchdog" 2>/dev/null
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=memory.used --format=csv,noheader
echo "runs failed or stopped: $fail of ${#MODELS[@]}"
for f in "$OUT"/*.stdout; do echo "$(basename "$f" .stdout): $(tail -1 "$f")"; done

# float16 copies for shipping (zoo.checkpoint.save_fp16), then, when RETURN_DIR is given, pack
# them into tar parts of at most 15 MiB each for a size-capped download (heaviest files last).
"$PY" - "$OUT" "${4:-}" <<'EOF2'
import sys, tarfile
from pathlib import Path
from zoo.checkpoint import save_fp16
out = Path(sys.argv[1])
half = []
for pt in sorted(out.glob("*.pt")):
    if pt.name.endswith(".resume.pt"):
        continue
    half.append(save_fp16(pt, pt.with_suffix(".fp16.pt")))
    print(f"{half[-1].name}: {half[-1].stat().st_size / 1e6:.1f} MB")
if len(sys.argv) > 2 and sys.argv[2]:
    ret = Path(sys.argv[2]); ret.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ret / "logs.tar.gz", "w:gz") as t:
        for f in sorted(out.iterdir()):
            if f.suffix in (".jsonl", ".stdout", ".stderr"):
                t.add(f, arcname=f.name)
    cap, part, size, total = 15 * 2**20, 0, 0, 0
    tf = None
    for f in sorted(half, key=lambda f: f.stat().st_size):
        n = f.stat().st_size
        if total + n > 58 * 2**20 or n > cap:
            print(f"left for a second download: {f}")
            continue
        if tf is None or size + n > cap:
            if tf: tf.close()
            part += 1; size = 0
            tf = tarfile.open(ret / f"ckpt{part}.tar", "w")
        tf.add(f, arcname=f.name); size += n; total += n
    if tf: tf.close()
EOF2
