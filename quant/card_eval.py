"""Accuracy of every model file of one card on a labelled set, decoding the images once.

    python -m quant.evaluate --card artifacts/<name>.json --data assets/data/cifar10_test.tar.gz
        [--limit N] [--json]

For each artifact of the card (export.card.ordered_keys: onnx, onnx_int8,
tflite, tflite_int8, then other recipes such as onnx_int8_u8s8):
top-1, top-5 and, against the float model that
quant.evaluate.ref_keys names (an INT8 file: the float model of its format, else
ONNX; FP32 TFLite: ONNX, the converter's agreement), top-1 agreement and output
SQNR. `python -m quant.evaluate --model` per file would decode the test set once
per file; this is the mode `python -m deploy` runs as its accuracy stage
(`command` builds that stage's command line).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from export.card import key_is_int8
from zoo.util import ArmqError

from .common import QuantError

CARD_EVAL_FORMAT = "armq-card-eval/1"
PROG = "quant.evaluate --card"


def command(card: Path, data: Path, limit: int | None = None,
            python: str = sys.executable) -> list[str]:
    """The command line of this mode; it prints the JSON document on stdout."""
    return [python, "-m", "quant.evaluate", "--card", str(card), "--data", str(data), "--json"] \
        + (["--limit", str(limit)] if limit else [])


def evaluate_card(card_path: Path, data: Path, limit: int | None = None,
                  arm: bool = True) -> dict:
    """{"n", "data", "results": {artifact key: metrics, "ref", "seconds", "file"}} of a card."""
    from export.card import load_card, ordered_keys
    from export.graph_io import check_card_graph

    from .calib import check_source, load_set
    from .evaluate import ref_keys, run_model
    from .metrics import summarize

    card = load_card(card_path)
    for key in ordered_keys(card.artifacts):
        if card.artifact_path(card_path, key).is_file():
            check_card_graph(card, card.artifact_path(card_path, key))
    check_source(data, "--data")
    t0 = time.perf_counter()
    images = load_set(data, card, limit=limit, require_labels=True, progress=False, what="--data")
    decode_s = time.perf_counter() - t0
    logits: dict[str, object] = {}
    out: dict[str, dict] = {}
    for key in ordered_keys(card.artifacts):   # every file the card names, recipes included
        path = card.artifact_path(card_path, key)
        if not path.is_file():
            out[key] = {"error": f"{path.name} is missing"}
            continue
        t = time.perf_counter()
        try:
            logits[key] = run_model(path, images.x, desc=None, arm=arm)
        except ArmqError as e:
            out[key] = {"error": str(e).splitlines()[0]}
            continue
        secs = time.perf_counter() - t
        ref_key = next((r for r in ref_keys(key) if r in logits), None)
        r = summarize(logits[key], images.labels, logits[ref_key] if ref_key else None,
                      num_classes=len(card.class_names), what=path.name)
        r.update(ref=ref_key, seconds=round(secs, 2), file=path.name)
        out[key] = r
        print(f"{PROG}: {path.name}: " + ", ".join(
            f"{k} {r[k]}" for k in ("top1", "top5", "agreement", "sqnr_db") if r.get(k) is not None)
            + (f" (vs {ref_key})" if ref_key else "") + f" [{secs:.1f} s]", file=sys.stderr)
    return {"format": CARD_EVAL_FORMAT, "card": str(card_path), "data": str(data),
            "n": int(len(images.x)), "skipped_files": images.skipped,
            "decode_seconds": round(decode_s, 2), "results": out}


def main_card(card: Path, data: Path, limit: int | None, as_json: bool, arm: bool = True) -> int:
    """`python -m quant.evaluate --card`: the JSON document, or one table row per file."""
    from .evaluate import format_table

    res = evaluate_card(card, data, limit, arm=arm)
    if as_json:
        print(json.dumps(res, indent=1))
    else:
        rows = [dict(r, model=f"{card.stem} ({key})", backend=key.split("_")[0],
                     precision="int8" if key_is_int8(key) else "fp32", method=None)
                for key, r in res["results"].items() if "error" not in r]
        print(format_table(rows))
    bad = [k for k, v in res["results"].items() if "error" in v]
    for k in bad:
        print(f"{PROG}: {k}: {res['results'][k]['error']}", file=sys.stderr)
    if not res["results"]:
        raise QuantError(f"card {card.name} names no model file")
    if len(bad) == len(res["results"]):
        raise QuantError(f"no model of {card.name} could be evaluated: "
                         f"{res['results'][bad[0]]['error']}")
    return 0
