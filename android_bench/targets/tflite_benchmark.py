"""TFLite's `benchmark_model` on an Android device: its command line, its log, its result.

The adb target's default way to measure (.tflite only): the native binary from
LiteRT's prebuilt android_aarch64 benchmark tools or a bazel build, run as
    benchmark_model --graph=M --num_threads=T --warmup_runs=W+1 --warmup_min_secs=0
                    --num_runs=R --min_secs=0 --max_secs=TIMEOUT [--enable_op_profiling=true]
(exactly W+1 warm-up runs -- the first is runner.py's "first inference" -- and R
timed runs). Its log is parsed here: init time, first inference, warm-up and
inference count/avg/std/min/max in microseconds, memory footprint, and with
--profile the per-op-type summary, and turned into an armq-bench/1 result in
runner.py's layout. benchmark_model prints no median and no per-run samples, so
timing_ms.median is null and mean/std/min/max are given; `compare` falls back to
the mean for these results.

Everything here is pure (no device): tests/test_bench_adb.py checks it on sample
logs written after benchmark_model's log statements.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from .base import RESULT_FORMAT, BenchConfig, ModelSpec, RunnerFailed


def benchmark_argv(graph: str, config: BenchConfig, timeout_s: float) -> list[str]:
    """benchmark_model's arguments for one model at device path `graph`: W+1 warm-up
    runs (the first stands for runner.py's first inference), R timed runs, and
    --max_secs so that it stops starting runs at the time limit."""
    args = [f"--graph={graph}", f"--num_threads={config.threads}",
            f"--warmup_runs={config.warmup + 1}", "--warmup_min_secs=0",
            f"--num_runs={config.runs}", "--min_secs=0", f"--max_secs={int(timeout_s)}"]
    if config.profile:
        args.append("--enable_op_profiling=true")
    return args


# ---- the log (pure) ---------------------------------------------------------------------

_LEVEL = re.compile(r"^(?:INFO|WARN|WARNING|ERROR|FATAL|VERBOSE):\s*")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _num(s: str) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def parse_stat_line(line: str) -> dict | None:
    """`count=50 first=266601 curr=266931 min=265837 max=268116 avg=266473 std=419`
    (also `count=5 curr=1234(all same)` and `count=0`) -> dict of floats, in us."""
    s = _LEVEL.sub("", line.strip())
    if not s.startswith("count="):
        return None
    all_same = "(all same)" in s
    s = s.replace("(all same)", " ")
    out: dict[str, float] = {}
    for key, val in re.findall(rf"(\w+)=({_NUM})", s):
        v = _num(val)
        if v is not None:
            out[key] = v
    if "count" not in out:
        return None
    if all_same or ("curr" in out and "avg" not in out and out["count"] > 0):
        c = out["curr"]
        out.update({"first": out.get("first", c), "min": c, "max": c, "avg": c, "std": 0.0})
    return out


def _profile_summary(lines: list[str]) -> dict | None:
    """The 'Summary by node type' table of --enable_op_profiling (regular runs' one)."""
    starts = [i for i, ln in enumerate(lines) if "Summary by node type" in ln]
    if not starts:
        return None
    regular = [i for i, ln in enumerate(lines) if "Regular Benchmark Runs" in ln]
    start = next((i for i in starts if regular and i > regular[-1]), starts[-1])
    ops = []
    for ln in lines[start + 1:]:
        s = _LEVEL.sub("", ln).strip()
        if not s:
            if ops:
                break
            continue
        if s.startswith("[") or s.startswith("="):
            if s.startswith("=") and ops:
                break
            continue
        toks = s.replace(",", " ").split()
        # [Node type] [count] [avg ms] [avg %] [cdf %] [mem KB] ([times called])
        nums = []
        while toks and _num(toks[-1].rstrip("%")) is not None:
            nums.insert(0, toks.pop())
        if not toks or len(nums) < 3:
            break
        ops.append({"op_type": " ".join(toks), "nodes": int(float(nums[0])),
                    "ms": float(nums[1]), "pct": float(nums[2].rstrip("%"))})
    if not ops:
        return None
    return {"available": True, "source": "benchmark_model --enable_op_profiling "
                                          "(Summary by node type)",
            "total_ms": round(sum(o["ms"] for o in ops), 6), "by_op_type": ops}


def parse_benchmark_output(text: str) -> dict:
    """Parse TFLite/LiteRT benchmark_model's log (stdout+stderr, with or without the
    `INFO: ` prefixes of newer versions). Times in microseconds as printed.

    Returns {"threads", "init_us", "first_us", "warmup": stat, "inference": stat,
    "model_size_mb", "memory": {...}, "profile", "errors"}; raises RunnerFailed when
    the log holds no inference statistics (the run failed: its ERROR line is the message).
    """
    lines = (text or "").splitlines()
    out: dict[str, Any] = {"threads": None, "init_us": None, "first_us": None, "warmup": None,
                           "inference": None, "model_size_mb": None, "memory": {},
                           "profile": None, "errors": []}
    stats: list[dict] = []
    pending_run = False
    summary: dict[str, float] = {}
    for raw in lines:
        ln = _LEVEL.sub("", raw.strip())
        if raw.strip().startswith(("ERROR:", "FATAL:")) or ln.startswith("Benchmarking failed"):
            out["errors"].append(ln)
        if m := re.match(r"^(?:Num threads|#threads used for CPU inference):\s*\[(\d+)\]", ln):
            out["threads"] = int(m.group(1))
        elif m := re.match(rf"^The input model file size \(MB\):\s*({_NUM})", ln):
            out["model_size_mb"] = _num(m.group(1))
        elif m := re.match(rf"^Initialized session in\s*({_NUM})\s*ms", ln):
            out["init_us"] = _num(m.group(1)) * 1000.0
        elif ln.startswith("Running benchmark for at least"):
            pending_run = True
        elif ln.startswith("count=") and pending_run:
            st = parse_stat_line(ln)
            if st is not None:
                stats.append(st)
            pending_run = False
        elif ln.startswith("Inference timings in us:"):
            for key, val in re.findall(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})", ln.split(":", 1)[1]):
                v = _num(val)
                if v is not None:
                    summary[key.strip()] = v
        elif m := re.match(rf"^Memory footprint delta from the start of the tool \(MB\):\s*"
                           rf"init=({_NUM})\s+overall=({_NUM})", ln):
            out["memory"].update({"init_mb": _num(m.group(1)), "overall_mb": _num(m.group(2))})
        elif m := re.match(rf"^Overall peak memory footprint \(MB\).*?:\s*({_NUM})", ln):
            out["memory"]["peak_mb"] = _num(m.group(1))
    if len(stats) >= 2:
        out["warmup"], out["inference"] = stats[0], stats[1]
    elif len(stats) == 1 and "Inference (avg)" in summary:
        out["inference"] = stats[0]
    if "Init" in summary:
        out["init_us"] = summary["Init"]
    if "First inference" in summary:
        out["first_us"] = summary["First inference"]
    if out["inference"] is None or not out["inference"].get("count"):
        why = out["errors"][0] if out["errors"] else "no inference statistics in its output"
        raise RunnerFailed(f"benchmark_model failed: {why}")
    if "Inference (avg)" in summary:
        out["inference"]["avg"] = summary["Inference (avg)"]
    if out["warmup"] is not None and "Warmup (avg)" in summary:
        out["warmup"]["avg"] = summary["Warmup (avg)"]
    if out["first_us"] is None and out["warmup"] is not None:
        out["first_us"] = out["warmup"].get("first")
    out["profile"] = _profile_summary(lines)
    return out


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def cpu_from_cpuinfo(text: str, abi: str = "", soc: str = "") -> dict:
    """CPU features that decide INT8 speed, from the phone's /proc/cpuinfo (runner.py's
    reader and keys)."""
    from ..runner import cpu_features, parse_cpuinfo

    info = parse_cpuinfo(text)
    flags = info["flags"]
    machine = "aarch64" if abi.startswith("arm64") or "asimd" in flags else (abi or "unknown")
    return {"machine": machine, "model": soc or info["hardware"] or "unknown",
            "features": cpu_features("aarch64", flags),
            "feature_source": "/proc/cpuinfo (adb)" if flags else "none",
            "n_cpus": info["n_processors"] or None}


def is_int8_model(model: ModelSpec) -> bool:
    """From the file name convention (x.int8.tflite) or the card's artifact key (*_int8)."""
    if ".int8." in model.path.name or ".int8" in model.path.stem:
        return True
    if model.card:
        try:
            card = json.loads(Path(model.card).read_text())
            for key, art in (card.get("artifacts") or {}).items():
                if key.endswith("int8") and Path(str(art.get("path", ""))).name == model.path.name:
                    return True
        except (OSError, ValueError, AttributeError):
            pass
    return False


def result_from_benchmark(parsed: dict, model: ModelSpec, config: BenchConfig,
                          device: dict, binary: str) -> dict:
    """An armq-bench/1 result (runner.py's layout) from benchmark_model's parsed log."""
    card = {}
    if model.card:
        try:
            card = json.loads(Path(model.card).read_text())
        except (OSError, ValueError):
            card = {}
    inf, warm = parsed["inference"], parsed.get("warmup") or {}
    int8 = is_int8_model(model)
    cpu = device.get("cpu") or cpu_from_cpuinfo("")
    try:
        from ..runner import int8_warnings
        warnings = int8_warnings(cpu, int8)
    except Exception:  # noqa: BLE001 - warnings are advisory
        warnings = []
    warnings.append("benchmark_model reports mean/std/min/max only: no median, no "
                    "confidence interval, no per-run samples")
    h = hashlib.sha256(model.path.read_bytes()).hexdigest()
    timing = {"init": _ms(parsed.get("init_us")), "first": _ms(parsed.get("first_us")),
              "warmup_total": (_ms(warm["avg"]) * warm["count"]
                               if warm.get("avg") is not None and warm.get("count") else None),
              "warmup_runs": config.warmup, "runs": int(inf["count"]),
              "mean": _ms(inf.get("avg")), "median": None, "p90": None, "p99": None,
              "min": _ms(inf.get("min")), "max": _ms(inf.get("max")), "std": _ms(inf.get("std")),
              "median_ci95": None, "median_ci_coverage": None, "clock": "benchmark_model",
              "statistic": "mean"}
    card_in = card.get("input") or {}
    return {
        "format": RESULT_FORMAT, "runner_version": None,
        "model": {"file": model.path.name, "format": "tflite", "sha256": h,
                  "size_bytes": model.path.stat().st_size, "int8": int8,
                  "card_name": card.get("name"), "cost": card.get("cost")},
        "runtime": {"name": "tflite benchmark_model", "version": None,
                    "threads": parsed.get("threads") or config.threads, "binary": binary},
        "input": {"name": card_in.get("name"), "shape": card_in.get("shape"),
                  "dtype": card_in.get("dtype"), "quantization": None,
                  "source": {"kind": "random", "by": "benchmark_model"}},
        "outputs": [],
        "output_check": None,
        "timing_ms": timing,
        "system": {"os": "Android", "release": device.get("release"),
                   "sdk": device.get("sdk"), "device": device.get("model"),
                   "manufacturer": device.get("manufacturer"), "android": True, "cpu": cpu},
        "config": {"threads": config.threads, "warmup": config.warmup, "runs": config.runs,
                   "profile": config.profile, "markers": False, "seed": None},
        "memory_mb": parsed.get("memory") or None,
        "profile": parsed.get("profile") if config.profile else None,
        "warnings": warnings,
    }
