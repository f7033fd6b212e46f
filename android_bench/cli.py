"""python -m android_bench: benchmark models on a target, print a table, write JSON.

    python -m android_bench --model artifacts/x.onnx [artifacts/x.int8.onnx ...]
        [--target local|qemu[:<cpu>]|ssh|adb] (cpu: cortex-a53|cortex-a72|cortex-a76|neoverse-n1|max;
        the older `--target qemu --cpu <cpu>` still works)
        [--host user@board] [--threads 1] [--warmup N] [--runs N] [--profile]
        [--inputs x.npy] [--outputs-dir DIR] [--json out.json] [--timeout S]
    python -m android_bench --probe --target ssh|adb [--host/--serial ...] [--json cpu.json]

--warmup/--runs default to 10/100, or 1/5 on qemu (emulation is slow and its
instruction counts need few runs). The JSON ("armq-bench-results/1") holds one
result per model (runner.py's JSON plus "target", and "instructions" on qemu);
models that finished are kept when a later one fails, and the command then exits
non-zero with a one-line error. --probe only asks a board or phone for its CPU
(architecture and /proc/cpuinfo flags, "armq-device-probe/1"): what deploy picks a
device's INT8 recipe from.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Sequence

from zoo.clikit import make_parser
from zoo.util import atomic_output, check_writable_dir, cli_entry

from .targets import make_target
from .targets.base import BenchError, TargetOptions
from .targets.spec import TargetSpec

PROG = "python -m android_bench"


def _fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"


def _fmt_count(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else str(int(n))


def format_table(results: Sequence[dict], failures: Sequence[dict] = ()) -> str:
    """One row per model; emulated results are flagged in the heading and per row."""
    head = ["model", "runtime", "thr", "median ms", "95% CI", "p90", "mean±std", "init ms",
            "first ms", "instr/inf", ""]
    rows = []
    emulated = any(r.get("target", {}).get("emulated") for r in results)
    for r in results:
        t, rt, tm = r.get("target", {}), r.get("runtime", {}), r.get("timing_ms", {})
        ins = r.get("instructions") or {}
        ci = tm.get("median_ci95") or [None, None]
        flags = []
        if t.get("emulated"):
            flags.append("EMULATED")
        if r.get("warnings") and any("dot-product" in w for w in r["warnings"]):
            flags.append("no-dotprod")
        rows.append([r["model"].get("file", "?"),
                     f"{rt.get('name', '?')} {rt.get('version', '')}".strip(),
                     str(rt.get("threads", "?")), _fmt_ms(tm.get("median")),
                     f"{_fmt_ms(ci[0])}-{_fmt_ms(ci[1])}", _fmt_ms(tm.get("p90")),
                     f"{_fmt_ms(tm.get('mean'))}±{_fmt_ms(tm.get('std'))}",
                     _fmt_ms(tm.get("init")), _fmt_ms(tm.get("first")),
                     _fmt_count(ins.get("per_inference")), " ".join(flags)])
    for f in failures:
        rows.append([f["model"].rsplit("/", 1)[-1], "FAILED", "", "", "", "", "", "", "", "",
                     f["error"][:60]])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = []
    if results:
        t = results[0].get("target", {})
        where = t.get("kind", "?") + (f" {t['cpu']}" if t.get("cpu") else "") + \
            (f" {t['host']}" if t.get("host") and t.get("kind") != "local" else "")
        cpu = results[0].get("system", {}).get("cpu", {})
        feats = ",".join(k for k, v in (cpu.get("features") or {}).items() if v) or "-"
        lines.append(f"target: {where}; cpu: {cpu.get('model', '?')} [{feats}]")
    if emulated:
        lines.append("EMULATED (QEMU): milliseconds are emulation time on this host, NOT board "
                     "latency; compare instr/inf (guest instructions per inference)")
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths[:-1]))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    warns = sorted({w for r in results for w in r.get("warnings", [])
                    if not w.startswith("emulated:")})
    lines += [f"warning: {w}" for w in warns]
    return "\n".join(lines)


def _add_transport_args(ap: argparse.ArgumentParser) -> None:
    for mod in ("ssh", "adb"):
        try:
            m = __import__(f"android_bench.targets.{mod}", fromlist=["add_arguments"])
        except ImportError:
            continue
        add = getattr(m, "add_arguments", None)
        if add:
            add(ap)


def add_device_args(ap) -> set[str]:
    """The flags that say how to reach a board or phone (android_bench's own, also taken by
    `quant.evaluate --on ssh|adb` and appended by deploy from the device inventory);
    returns their argparse dests."""
    before = {a.dest for a in ap._actions}
    ap.add_argument("--host", help="ssh: user@board")
    ap.add_argument("--serial", help="adb: device serial")
    ap.add_argument("--python", help="interpreter that runs runner.py (default: this one "
                                     "locally, python3 on a board)")
    ap.add_argument("--remote-dir", help="scratch folder on the target")
    _add_transport_args(ap)
    return {a.dest for a in ap._actions} - before


def device_options(a: argparse.Namespace, dests: set[str], cpu: str | None = None,
                   icount: bool = True) -> TargetOptions:
    """TargetOptions from the flags add_device_args added (`dests`)."""
    named = ("host", "serial", "python", "remote_dir")
    extra = {k: getattr(a, k) for k in dests - set(named) if getattr(a, k, None) is not None}
    extra["icount"] = icount
    return TargetOptions(cpu=cpu, extra=extra, **{k: getattr(a, k, None) for k in named})


def target_spec(target: str, cpu: str | None) -> TargetSpec:
    """--target in the one target syntax (targets/spec.py: `qemu:cortex-a72`), or the older
    `--target qemu --cpu cortex-a72`; both at once must agree."""
    spec = TargetSpec.parse(target, "--target", devices=False)
    if cpu is None:
        return spec
    if spec.kind != "qemu":
        raise BenchError(f"--cpu picks the emulated core of a qemu target, not of --target "
                         f"{spec.id}")
    given = TargetSpec.parse(f"qemu:{cpu}", "--cpu", devices=False)
    if ":" in target and given != spec:
        raise BenchError(f"--target {target} and --cpu {cpu} name two cores; give one "
                         f"(--target {given.id})")
    return given


def _target_options(a: argparse.Namespace, spec: TargetSpec) -> TargetOptions:
    return device_options(a, a.device_dests, cpu=spec.cpu, icount=not a.no_icount)


def command(files: Sequence[str], target: str, runs: int, warmup: int, out_json: Path,
            cpu: str | None = None, python: str = sys.executable) -> list[str]:
    """The command line that benchmarks `files` on one target and writes `out_json`."""
    spec = target_spec(target, cpu)
    return [python, "-m", "android_bench", "--model", *map(str, files), "--target", spec.id,
            "--runs", str(runs), "--warmup", str(warmup), "--json", str(out_json)]


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(PROG, __doc__)
    ap.add_argument("--model", nargs="+", action="extend",
                    help=".onnx / .tflite / .pte files (cards beside them are used); required "
                         "unless --probe")
    ap.add_argument("--probe", action="store_true",
                    help="ssh/adb: only ask the device for its CPU (architecture and "
                         "/proc/cpuinfo flags: what its INT8 recipe depends on); JSON on "
                         "stdout and in --json")
    ap.add_argument("--target", default="local",
                    help="local, qemu:<cpu> (cortex-a53, cortex-a72, cortex-a76 (qemu alone), "
                         "neoverse-n1 or max), ssh or adb (default: %(default)s)")
    ap.add_argument("--cpu", help="qemu: the core, as in --target qemu:<cpu> (older form)")
    ap.set_defaults(device_dests=add_device_args(ap))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, help="untimed runs (default 10; qemu 1)")
    ap.add_argument("--runs", type=int, help="timed runs (default 100; qemu 5)")
    ap.add_argument("--profile", action="store_true", help="per-op profile by op type")
    ap.add_argument("--inputs", help=".npy of preprocessed inputs (default: seeded random)")
    ap.add_argument("--outputs-dir", help="save each model's outputs here as .npy")
    ap.add_argument("--runtime", default="auto",
                   choices=["auto", "onnxruntime", "ai_edge_litert", "tflite_runtime", "mnn",
                            "executorch"])
    ap.add_argument("--seed", type=int, default=0, help="seed of the random input")
    ap.add_argument("--timeout", type=float, help="seconds per model (default: the target's)")
    ap.add_argument("--no-icount", action="store_true",
                    help="qemu: no instruction counting (no plugin build)")
    ap.add_argument("--json", help="write all results here (atomically)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


PROBE_FORMAT = "armq-device-probe/1"


def probe_command(target: str, out_json: Path, python: str = sys.executable) -> list[str]:
    """The command line that asks a board or phone for its CPU and writes `out_json`."""
    return [python, "-m", "android_bench", "--probe", "--target", target, "--json", str(out_json)]


def probe(a: argparse.Namespace) -> int:
    """--probe: connect, probe, close; nothing is copied to the device."""
    if a.model:
        raise BenchError("--probe takes no --model (it only asks the device for its CPU)")
    spec = target_spec(a.target, a.cpu)
    if not spec.remote:
        raise BenchError(f"--probe asks a board or a phone (--target ssh or adb), not "
                         f"--target {spec.id}")
    if a.json:
        check_writable_dir(Path(a.json).parent)
    target = make_target(spec.kind, _target_options(a, spec))
    if not a.quiet:
        target.progress = lambda msg: print(msg, file=sys.stderr, flush=True)
    cpu = target.cpu()
    doc = {"format": PROBE_FORMAT,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "target": target.describe(), "cpu": cpu}
    text = json.dumps(doc, indent=2)
    if a.json:
        with atomic_output(a.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.probe:
        return probe(a)
    from .api import BenchOptions, benchmark

    res = benchmark(a.model or [], BenchOptions(
        a.target, device_options(a, a.device_dests, cpu=a.cpu, icount=not a.no_icount), a.threads, a.warmup, a.runs, a.profile, a.inputs,
        a.outputs_dir, a.runtime, a.seed, a.timeout, a.json, a.quiet),
        command=[PROG, *(sys.argv[1:] if argv is None else argv)])
    if res.results or res.failures:
        print(format_table(res.results, res.failures))
    if a.json and res.results:
        print(f"results: {a.json}" + (" (finished models only)" if res.failures else ""))
    if res.error is not None:
        raise BenchError(res.error)
    return 0


def entry(argv: Sequence[str] | None = None) -> None:
    cli_entry(main, PROG, argv)
