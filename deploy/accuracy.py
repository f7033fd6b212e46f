"""Accuracy of every model file of one card on a labelled set, decoding the images once.

    python -m deploy.accuracy --card artifacts/<name>.json --data assets/data/cifar10_test.tar.gz
        [--limit N] [--json out.json]

For each of onnx, onnx_int8, tflite, tflite_int8 present in the card: top-1,
top-5 and, against the float model of the same format (ONNX for a format
without one), top-1 agreement and output SQNR. The FP32 TFLite model is also
compared with the FP32 ONNX model (converter agreement). A thin layer over the
quant stage's library (quant.calib.load_set, quant.evaluate.run_model,
quant.metrics.summarize): `python -m quant.evaluate` per file would decode the
test set once per file.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_output, cli_entry

PROG = "deploy.accuracy"
KEYS = ("onnx", "onnx_int8", "tflite", "tflite_int8")
REF_OF = {"onnx_int8": ("onnx",), "tflite_int8": ("tflite", "onnx"), "tflite": ("onnx",)}


def evaluate_card(card_path: Path, data: Path, limit: int | None = None) -> dict:
    from export.card import load_card
    from quant.calib import check_source, load_set
    from quant.evaluate import run_model
    from quant.metrics import summarize

    card = load_card(card_path)
    check_source(data, "--data")
    t0 = time.perf_counter()
    images = load_set(data, card, limit=limit, require_labels=True, progress=False, what="--data")
    decode_s = time.perf_counter() - t0
    logits: dict[str, object] = {}
    out: dict[str, dict] = {}
    for key in KEYS:
        if key not in card.artifacts:
            continue
        path = card.artifact_path(card_path, key)
        if not path.is_file():
            out[key] = {"error": f"{path.name} is missing"}
            continue
        t = time.perf_counter()
        try:
            logits[key] = run_model(path, images.x, desc=None)
        except ArmqError as e:
            out[key] = {"error": str(e).splitlines()[0]}
            continue
        secs = time.perf_counter() - t
        ref_key = next((r for r in REF_OF.get(key, ()) if r in logits), None)
        r = summarize(logits[key], images.labels, logits[ref_key] if ref_key else None)
        r.update(ref=ref_key, seconds=round(secs, 2), file=path.name)
        out[key] = r
        print(f"{PROG}: {path.name}: " + ", ".join(
            f"{k} {r[k]}" for k in ("top1", "top5", "agreement", "sqnr_db") if r.get(k) is not None)
            + (f" (vs {ref_key})" if ref_key else "") + f" [{secs:.1f} s]", file=sys.stderr)
    return {"format": "armq-deploy-accuracy/1", "card": str(card_path), "data": str(data),
            "n": int(len(images.x)), "skipped_files": images.skipped,
            "decode_seconds": round(decode_s, 2), "results": out}


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("--card", required=True, type=Path, help="model card (artifacts/<name>.json)")
    p.add_argument("--data", required=True, type=Path, help="labelled ImageFolder tree / .tar(.gz)")
    p.add_argument("--limit", type=int, help="at most N images, spread over the classes")
    p.add_argument("--json", type=Path, help="write the result here (atomically)")
    a = p.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        raise ArmqError("--limit must be at least 1")
    res = evaluate_card(a.card, a.data, a.limit)
    text = json.dumps(res, indent=1)
    if a.json:
        with atomic_output(a.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    bad = [k for k, v in res["results"].items() if "error" in v]
    if bad and len(bad) == len(res["results"]):
        raise ArmqError(f"no model of {a.card.name} could be evaluated: {res['results'][bad[0]]['error']}")
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
