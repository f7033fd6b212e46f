"""The stages that run on a target, beside deploy/plan.py's model preparation: the probe of
each board / phone, the benchmarks, the per-op profile, the accuracy on a target's own
kernels, the per-target comparisons and the latency model's why_int8 split. A mixin of
`deploy.plan.Plan` (its state: settings `s`, `run_dir`, `art`, `results`, `py`, `notes`,
`baseline`, and its card helpers), split out by concern to keep each module short.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from android_bench import compare as bench_compare
from android_bench import latency_model
from android_bench import profile as bench_profile
from android_bench.cli import command as bench_command, probe_command
from export.card import int8_filename, key_format, key_is_int8, ordered_keys
from export.formats import Format, Runtime
from quant.config import RecipeError
from quant.on_target import command as evaluate_on_command

from . import analysis, collect
from .settings import REPO
from .spec import SpecError, TargetSpec
from .stages import SkipStage, Stage

if TYPE_CHECKING:
    from .settings import Planned

PROFILE_RUNS = 20
_WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,39}$")    # a CPU flag or machine name
TIMEOUTS = {"export_onnx": 1800, "export_tflite": 1800, "export_mnn": 900, "quant_ort": 3600,
            "quant_tflite": 3600, "quant_mnn": 3600,
            "accuracy": 1800, "accuracy_on": 3600, "opprofile": 900, "bench_local": 1800,
            "bench_qemu": 5400, "bench_remote": 3600, "probe": 300, "compare": 300, "why_int8": 300,
            "export_executorch": 1800, "quant_executorch": 3600}


class TargetStages:
    """Plan's stages that run on (or for) one target."""

    # -- boards and phones: probed before the plan --
    def probe_stages(self) -> list[Stage]:
        """One android_bench --probe per board / phone target (on its device: the Runner
        gives it the device, as a benchmark). Its CPU flags become the target's recipe."""
        out: list[Stage] = []
        for tg in self.s.targets:
            if not tg.remote:
                continue
            out_json = self.run_dir / "devices" / f"{tg.slug}.json"
            out.append(Stage(id=f"probe/{tg.id}", kind="probe", target=tg.id,
                             timeout_s=TIMEOUTS["probe"], after=self._after_probe(tg, out_json),
                             prepare=self._argv(lambda tg=tg, o=out_json: probe_command(
                                 tg.kind, o, python=self.py))))
        return out

    def _after_probe(self, tg: TargetSpec, path: Path):
        def after(stage: Stage, out: dict) -> None:
            if out.get("exit_code") not in (0, None):
                return          # failed: the stage's one line says why; no recipe, no bench
            # the device's answer is data: plain words only reach quant.ptq's --for
            cpu = (collect.read_json(path) or {}).get("cpu") or {}
            machine = str(cpu.get("machine") or "")
            machine = machine if _WORD.match(machine) else "unknown"
            flags = [str(f) for f in cpu.get("flags") or [] if _WORD.match(str(f))]
            done = TargetSpec(tg.kind, device=tg.device, probed=f"{machine}:{'+'.join(flags)}")
            try:
                stage.outputs["recipe"] = done.recipe().tag
            except RecipeError as e:
                raise SpecError(f"{tg.id}: {e}") from None
            with self.results.lock:     # probes of several devices finish side by side
                i = self.s.targets.index(tg)
                self.s.targets[i] = done
                self.results.doc["targets"][i] = target_record(done)
                if not flags:
                    self.notes.append(f"{tg.id}: no CPU flags read from the device "
                                      f"(/proc/cpuinfo): INT8 recipe from its architecture "
                                      f"({machine}) alone")
        return after

    def _accuracy_on_stage(self, p: Planned, tg: TargetSpec, ev: Path | None,
                           ev_note: str | None) -> Stage:
        """The ONNX INT8 file `tg` runs, scored on `tg` (that emulated core, or the board or
        phone: the Runner adds the device's flags) on a sample of the test set
        (quant.evaluate --on): its own kernels, beside the same file on this host."""
        out_json = self.run_dir / "accuracy" / tg.slug / f"{p.tag}.json"

        def prepare(stage: Stage) -> None:
            key = self.int8_onnx_key(tg)     # a board's recipe is known once it was probed
            f = self._card_file(p, self._card_artifacts(p), key)
            if f is None:
                raise SkipStage(f"no ONNX INT8 file for {tg.id} ({key})")
            out_json.parent.mkdir(parents=True, exist_ok=True)
            stage.argv = evaluate_on_command(f, ev, self.s.target_eval,
                                             tg.kind if tg.remote else tg.id, python=self.py)

        def after(stage: Stage, out: dict) -> None:
            doc = collect.read_json(out_json)
            if isinstance(doc, dict):
                keep = ("n", "top1", "top5", "agreement", "sqnr_db", "host", "seconds")
                with self.results.lock:
                    self.results.model(p.tag).setdefault("accuracy_on_target", {})[tg.id] = {
                        "key": self.int8_onnx_key(tg),
                        "file": Path(str(doc.get("model", ""))).name,
                        **{k: doc.get(k) for k in keep}}

        return Stage(id=f"{p.tag}/accuracy_on/{tg.id}", kind="accuracy_on", model=p.tag,
                     target=tg.id,
                     needs=[f"{p.tag}/export_onnx", *self._quant_ort_id(p, tg)]
                     + ([f"probe/{tg.id}"] if tg.remote else []),
                     when=self._acc_when(p, ev, ev_note), prepare=prepare, after=after,
                     env={"ARMQ_THREADS": "1"} if self.s.jobs > 1 else {},
                     stdout_file=out_json, timeout_s=TIMEOUTS["accuracy_on"])

    def _prof_argv(self, p: Planned, out_json: Path):
        def prepare(stage: Stage) -> None:
            local = next(tg for tg in self.s.targets if tg.kind == "local")
            files = [self.art / f"{p.tag}.onnx",
                     self.art / int8_filename(p.tag, "onnx", local.recipe().tag)]
            files = [str(f) for f in files if f.is_file()]
            if not files:
                raise SkipStage("no ONNX model to profile")
            stage.argv = bench_profile.command(files, PROFILE_RUNS, out_json, python=self.py)
            stage.outputs["load_avg_before"] = _load()
        return prepare

    def _after_profile(self, p: Planned, path: Path):
        def after(stage: Stage, out: dict) -> None:
            doc = collect.read_json(path)
            prof = collect.summarize_profile(doc)
            if prof:
                with self.results.lock:
                    self.results.model(p.tag)["profile"] = prof
        return after

    def _bench_stage(self, p: Planned, tg: TargetSpec, exclusive: bool) -> Stage:
        out_json = self.run_dir / "bench" / tg.slug / f"{p.tag}.json"

        def prepare(stage: Stage) -> None:
            arts = self._card_artifacts(p)
            files = []
            for key in ordered_keys(arts):
                # ONNX INT8: only the file of this target's recipe runs here
                if key_format(key) == "onnx" and key_is_int8(key) and key != self.int8_onnx_key(tg):
                    continue
                if key_format(key) == Format.PTE.value and \
                        Runtime.EXECUTORCH.value not in self.s.runtimes:
                    continue    # a card from an earlier run: not asked for this time
                f = self._card_file(p, arts, key)
                if f is not None:
                    files.append(str(f))
            if not files:
                raise SkipStage("no model file to run (every export failed)")
            stage.argv = bench_command(files, tg.kind, self.s.runs_for(tg), self.s.warmup_for(tg),
                                       out_json, tg.cpu, python=self.py)
            stage.outputs["load_avg_before"] = _load()

        def after(stage: Stage, out: dict) -> None:
            stage.outputs["load_avg_after"] = _load()
            doc = collect.read_json(out_json)
            res, fails = collect.summarize_bench(doc)
            with self.results.lock:
                b = self.results.model(p.tag).setdefault("bench", {})
                b[tg.id] = res
                if fails:
                    self.results.model(p.tag).setdefault("bench_failures", {})[tg.id] = fails
                self.results.doc.setdefault("bench_files", {}).setdefault(tg.id, {})[p.tag] = \
                    show_path(out_json, self.run_dir)

        return Stage(id=f"{p.tag}/bench/{tg.id}", kind="bench", model=p.tag, target=tg.id,
                     needs=([f"{p.tag}/export_onnx"] if self.s.skip_tflite else []) +
                     ([f"probe/{tg.id}"] if tg.remote else []),
                     exclusive=exclusive, prepare=prepare, after=after,
                     timeout_s=TIMEOUTS["bench_qemu" if tg.emulated else
                                        "bench_remote" if tg.remote else "bench_local"])

    def _compare_stage(self, tg: TargetSpec) -> Stage:
        out_json = self.run_dir / "bench" / tg.slug / "compare.json"

        def prepare(stage: Stage) -> None:
            files = sorted((self.run_dir / "bench" / tg.slug).glob("*.json"))
            files = [f for f in files if f.name != "compare.json"]
            n_results = 0
            have_base = False
            for f in files:
                doc = collect.read_json(f) or {}
                rs = doc.get("results") or []
                n_results += len(rs)
                if self.baseline and f.stem == self.baseline and rs:
                    have_base = True
            if n_results < 2:
                raise SkipStage("fewer than two results on this target: nothing to compare")
            stage.argv = bench_compare.command(files, self.baseline if have_base else None,
                                               python=self.py)
            stage.stdout_file = out_json

        def after(stage: Stage, out: dict) -> None:
            doc = collect.read_json(out_json)
            if isinstance(doc, dict):
                with self.results.lock:
                    self.results.doc.setdefault("compare", {})[tg.id] = doc
        return Stage(id=f"compare/{tg.id}", kind="compare", target=tg.id, prepare=prepare,
                     after=after, timeout_s=TIMEOUTS["compare"])

    def _why_stage(self, p: Planned, tg: TargetSpec) -> Stage:
        """Where best INT8 / best FP32 stays under analysis.INT8_GOAL on `tg`: the latency
        model's per-op-class split of the ONNX FP32/INT8 pair `tg` runs (predicted from the
        shipped constants, seconds: no benchmark runs)."""
        out_json = self.run_dir / "why_int8" / tg.slug / f"{p.tag}.json"

        def prepare(stage: Stage) -> None:
            with self.results.lock:
                best = next((b for b in analysis.best_per_target(self.results.doc)
                             if b["model"] == p.tag and b["target"] == tg.id), None)
            if best is None:
                raise SkipStage("no FP32 and INT8 file both measured on this target")
            if not analysis.held_back(best):
                raise SkipStage(f"best INT8 is {best['speedup']:.2f}x best FP32, at least "
                                f"{analysis.INT8_GOAL}x: nothing to explain")
            if tg.kind not in ("local", "qemu"):
                raise SkipStage(f"no fitted latency-model constants for {tg.id} (the latency "
                                f"model fits local and QEMU targets)")
            files = [self.art / f"{p.tag}.onnx",
                     self.art / int8_filename(p.tag, "onnx", tg.recipe().tag)]
            if not all(f.is_file() for f in files):
                raise SkipStage("no ONNX FP32/INT8 pair (the latency model reads ONNX Runtime "
                                "graphs)")
            stage.argv = latency_model.command(*files, tg.id, out_json, python=self.py)

        def after(stage: Stage, out: dict) -> None:
            rec = collect.summarize_breakdown(collect.read_json(out_json))
            if rec is not None:
                with self.results.lock:
                    self.results.model(p.tag).setdefault("int8_why", {})[tg.id] = rec
        return Stage(id=f"{p.tag}/why_int8/{tg.id}", kind="why_int8", model=p.tag,
                     target=tg.id, prepare=prepare, after=after, timeout_s=TIMEOUTS["why_int8"])


def target_record(t: TargetSpec) -> dict:
    """A target in results.json; a board's or phone's recipe once its probe ran (else None)."""
    rec = {"id": t.id, "kind": t.kind, "cpu": t.cpu, "emulated": t.emulated,
           "recipe": None if t.remote and t.probed is None else t.recipe().to_dict()}
    if t.remote:
        rec.update(device=t.device, probed=t.probed)
    return rec


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def show_path(p: Path, base: Path | None = None) -> str:
    """A path for results.json: relative to `base` (the repository) when under it."""
    base = base or REPO
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)
