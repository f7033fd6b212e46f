"""The plan of a deploy run: which stages, in which order and groups, each with the
command line its own package builds, and how each stage's output file is folded
into results.json (deploy.collect).

    group 1 (side by side where the executor shares the run folder, each stage once
            what it needs ended; else in order)
                            cost, weights -> export.onnx, export.tflite, export.mnn (--runtimes)
                            -> quant.ptq (ort, tflite, mnn); side by side also each
                            target's quant.evaluate --on (below), once its ONNX INT8 file is made
    group 2 (alone)         android_bench on the local target, android_bench.profile
    group 3 (side by side)  quant.evaluate --card (accuracy), quant.evaluate --on (each
                            QEMU / board / phone target's ONNX INT8 file scored there),
                            android_bench on every QEMU target and every board / phone
                            (ssh, adb: timed on the device)
    group 4 (side by side)  android_bench.compare per target; where best INT8 / best FP32
                            stays under analysis.INT8_GOAL: android_bench.latency_model
                            --breakdown of the ONNX pair (which op classes hold INT8 back)

Boards and phones are probed first (`probe_stages`, android_bench --probe on the device):
their CPU flags decide their INT8 recipe, so `stages()` is built after the probes ran.

deploy only orchestrates: every number comes from a stage's subprocess (or, for
cost and weights, from zoo and export called in process).
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any
from pathlib import Path

from android_bench import compare as bench_compare
from android_bench.cli import command as bench_command, probe_command
from android_bench import profile as bench_profile
from android_bench import latency_model
from export import et_venv
from export.card import int8_filename, int8_key, key_format, key_is_int8, ordered_keys
from export.common import command as export_command
from export.litert_layout import to_argv as litert_argv
from export.mnn import command as export_mnn_command
from quant import card_eval, et_ptq
from quant.config import RecipeError
from quant.on_target import command as evaluate_on_command
from quant.ptq import command as ptq_command
from zoo.cli import variant_argv  # noqa: F401 - the zoo's export flags (Planned.export_args)

from . import analysis, collect
from .settings import RANDOM_NUM_CALIB, REPO, Planned, Settings, data_path
from .spec import SpecError, TargetSpec
from .stages import Results, SkipStage, Stage

PROFILE_RUNS = 20
_WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,39}$")    # a CPU flag or machine name
TIMEOUTS = {"export_onnx": 1800, "export_tflite": 1800, "export_mnn": 900, "quant_ort": 3600,
            "quant_tflite": 3600, "quant_mnn": 3600,
            "accuracy": 1800, "accuracy_on": 3600, "opprofile": 900, "bench_local": 1800,
            "bench_qemu": 5400, "bench_remote": 3600, "probe": 300, "compare": 300, "why_int8": 300,
            "export_executorch": 1800, "quant_executorch": 3600}


class Plan:
    """The stages of one run: `stages()` lists them in their groups; each stage's `prepare`
    builds its command line late (after the stages it needs) and its `after` folds the
    stage's output file into results.json."""

    def __init__(self, settings: Settings, planned: list[Planned], run_dir: Path, results: Results,
                 baseline: str | None):
        self.s = settings
        self.planned = planned
        self.run_dir = run_dir
        self.art = run_dir / "artifacts"
        self.results = results
        self.baseline = baseline
        self.py = sys.executable
        self.notes: list[str] = []
        # group 1 side by side (Executor.shares_files: one model's card updates take turns)
        self.side_by_side = False

    def card(self, p: Planned) -> Path:
        return self.art / f"{p.tag}.json"

    def refresh_card(self, p: Planned) -> None:
        summary = collect.summarize_card(self.card(p), self.run_dir)
        with self.results.lock:
            m = self.results.model(p.tag)
            m["card"] = summary.get("card")
            m["artifacts"] = summary.get("artifacts", {})

    def weights_kind(self, p: Planned) -> str | None:
        return (self.results.model(p.tag).get("weights") or {}).get("kind")

    # -- in-process stages --
    def run_cost(self, p: Planned):
        def run(stage: Stage) -> dict:
            import torch

            from zoo.cost import cost_of

            torch.set_num_threads(1)   # batch-1 bookkeeping run: threads only add sync waits
            rep = cost_of(p.variant)
            by_op = rep.by_op()
            cost = {"macs": rep.macs, "params": rep.params, "memory_access": rep.memory_access,
                    "input_size": rep.input_size, "by_op": by_op}
            with self.results.lock:
                self.results.model(p.tag)["cost"] = cost
            return {"macs": rep.macs}
        return run

    def card_cost(self, p: Planned):
        def run(stage: Stage) -> dict:
            cost = (collect.read_json(self.card(p)) or {}).get("cost") or {}
            if not cost:
                raise SkipStage("the export could not count this model's MACs")
            with self.results.lock:
                self.results.model(p.tag)["cost"] = dict(cost)
            return {"macs": cost.get("macs")}
        return run

    def run_weights(self, p: Planned):
        def run(stage: Stage) -> dict:
            from export.weights import find_shipped, load_pinned

            wdir = self.run_dir / "weights"
            if p.embedded_weights:
                from export.card import sha256_of

                rec = {"kind": "embedded", "source": str(p.spec.source),
                       "sha256": sha256_of(str(p.spec.source))}
                with self.results.lock:
                    self.results.model(p.tag)["weights"] = rec
                return {"kind": "embedded"}
            if p.spec.weights:
                src, kind = Path(p.spec.weights), "given"
            elif p.foreign:
                src, kind = None, "random"
            else:
                hit = find_shipped(p.variant.model, dict(p.variant.params), p.variant.dataset,
                                   p.variant.num_classes)
                src, kind = (hit.path, "shipped") if hit else (None, "random")
            rec: dict = {"kind": kind}
            if src is not None:
                # Read the bytes once and keep them: the training run may rewrite the
                # shipped file at any time; every later stage uses this snapshot.
                raw = src.read_bytes()
                wdir.mkdir(parents=True, exist_ok=True)
                snap = wdir / f"{p.tag}.pt"
                snap.write_bytes(raw)
                ck = load_pinned(snap)
                rec.update(source=_show(src), snapshot=_show(snap, self.run_dir), sha256=ck.sha256)
                for k in ("metrics", "epochs_done", "epoch"):
                    if k in ck.data and isinstance(ck.data[k], (int, float, dict, str)):
                        rec[k] = ck.data[k]
            else:
                rec["note"] = "no shipped weights for this variant: random init (seed 0)"
            with self.results.lock:
                self.results.model(p.tag)["weights"] = rec
            return {"kind": kind}
        return run

    def weights_file(self, p: Planned) -> Path | None:
        """The run's snapshot of the model's weights, or None: random init."""
        snap = self.run_dir / "weights" / f"{p.tag}.pt"
        if self.weights_kind(p) in ("shipped", "given") and snap.is_file():
            return snap
        return None

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

    # -- stage list --
    def stages(self) -> list[tuple[list[Stage], bool]]:
        """(stages, parallel) groups: prepare each model (in order), time locally (alone),
        then accuracy and QEMU runs side by side, then the comparisons."""
        s = self.s
        g1: list[Stage] = []
        g2: list[Stage] = []
        g3: list[Stage] = []
        g4: list[Stage] = []
        local = [t for t in s.targets if t.kind == "local"]
        # QEMU and boards/phones: not timed on this machine, so beside the accuracy runs
        side = [t for t in s.targets if t.kind == "qemu" or t.remote]
        for p in self.planned:
            t = p.tag
            mk = lambda kind, **kw: Stage(id=f"{t}/{kind}", kind=kind, model=t, **kw)  # noqa: E731
            if not p.foreign:
                g1.append(mk("cost", run=self.run_cost(p)))
            g1.append(mk("weights", run=self.run_weights(p)))

            g1.append(mk("export_onnx", needs=[f"{t}/weights"], timeout_s=TIMEOUTS["export_onnx"],
                         prepare=self._argv(lambda p=p: export_command(
                             "export.onnx", p.export_args(), self.art, self.weights_file(p),
                             python=self.py)),
                         after=self._after_card(p)))
            if not s.skip_tflite:
                g1.append(mk("export_tflite", needs=[f"{t}/weights"],
                             timeout_s=TIMEOUTS["export_tflite"],
                             when=lambda p=p: p.no_tflite_reason(),
                             prepare=self._argv(lambda p=p: export_command(
                                 "export.tflite", p.export_args(), self.art,
                                 self.weights_file(p), python=self.py)
                                 + litert_argv(s.litert_rewrites)),
                             after=self._after_card(p)))
            if "mnn" in s.runtimes:   # MNN converts the ONNX export (and checks against it)
                g1.append(mk("export_mnn", needs=[f"{t}/export_onnx"],
                             timeout_s=TIMEOUTS["export_mnn"],
                             prepare=self._argv(lambda p=p: export_mnn_command(
                                 self.card(p), python=self.py)),
                             after=self._after_card(p)))
            if p.foreign:  # no zoo variant to count: the export's card has the count
                g1.append(mk("cost", needs=[f"{t}/export_onnx"], run=self.card_cost(p)))
            p_calib, p_note = data_path("calib", p.dataset, s.data_for("calib", p.dataset))
            export_of = {"ort": "export_onnx", "tflite": "export_tflite", "mnn": "export_mnn"}
            for r in s.runtimes:   # executorch: its own stages (_executorch_stages)
                note = f"runtime {r}: not built into this armq (no stages ran for it)"
                if r not in export_of and r != "executorch" and note not in self.notes:
                    self.notes.append(note)
            # ORT: one INT8 file per recipe the targets need (identical files are made once);
            # TFLite full-integer is int8 activations on every target, MNN has one recipe: one file.
            quants: list[tuple[str, Any]] = []
            for backend in [r for r in s.runtimes if r in export_of]:
                quants += [("ort", tg) for tg in self.recipe_targets()] if backend == "ort" \
                    else [(backend, None)]
            for backend, tg in quants:
                needs = [f"{t}/{export_of[backend]}"]
                sid = f"quant_{backend}" + (f"/{tg.recipe().tag}" if tg is not None and
                                             len(self.recipe_targets()) > 1 else "")
                g1.append(Stage(id=f"{t}/{sid}", kind=f"quant_{backend}", model=t, needs=needs,
                                timeout_s=TIMEOUTS[f"quant_{backend}"],
                                when=(lambda c=p_calib, n=p_note, b=backend, p=p: n if c is None else
                                      p.no_tflite_reason() if b == "tflite" else None),
                                prepare=self._argv(lambda p=p, b=backend, c=p_calib, tg=tg:
                                                   ptq_command(p.tag, c, b, self._num_calib(p, b),
                                                               self.art, python=self.py,
                                                               target=tg.recipe_target if tg else None,
                                                               source=p.source_arg
                                                               if b == "tflite" else None,
                                                               litert_rewrites=s.litert_rewrites)),
                                after=self._after_card(p)))
                if p_note and p_calib is not None and p_note not in self.notes:
                    self.notes.append(p_note)
            if "executorch" in s.runtimes:
                g1 += self._executorch_stages(p, mk, p_calib, p_note)
            # accuracy: trained weights and a test set only
            ev, ev_note = data_path("test", p.dataset, s.data_for("test", p.dataset))
            acc_json = self.run_dir / "accuracy" / f"{t}.json"
            g3.append(mk("accuracy", needs=[f"{t}/export_onnx"], timeout_s=TIMEOUTS["accuracy"],
                         when=self._acc_when(p, ev, ev_note),
                         env={"ARMQ_THREADS": "1"} if s.jobs > 1 else {},
                         prepare=self._argv(lambda p=p, ev=ev: card_eval.command(
                             self.card(p), ev, s.limit_eval, python=self.py)),
                         stdout_file=acc_json, after=self._after_accuracy(p, acc_json)))
            if s.target_eval:   # beside the TFLite export and PTQ: it needs the ONNX INT8 only
                (g1 if self.side_by_side else g3).extend(
                    self._accuracy_on_stage(p, tg, ev, ev_note)
                    for tg in s.targets if tg.emulated or tg.remote)
            for tg in local:
                g2.append(self._bench_stage(p, tg, exclusive=True))
                prof_json = self.run_dir / "profile" / f"{t}.json"
                g2.append(mk("opprofile", needs=[f"{t}/export_onnx"], exclusive=True,
                             timeout_s=TIMEOUTS["opprofile"],
                             prepare=self._prof_argv(p, prof_json),
                             after=self._after_profile(p, prof_json)))
            for tg in side:
                g3.append(self._bench_stage(p, tg, exclusive=False))
        for tg in s.targets:
            g4.append(self._compare_stage(tg))
        for p in self.planned:
            for tg in s.targets:
                g4.append(self._why_stage(p, tg))
        if self.side_by_side:   # the longest lane (TFLite export, then PTQ) starts first
            g1.sort(key=lambda st: {"weights": 0, "export_tflite": 1}.get(st.kind, 2))
        # compare and why_int8 read the bench results and write their own files only
        return [(g1, self.side_by_side), (g2, False), (g3, True), (g4, True)]

    def recipe_targets(self) -> list[TargetSpec]:
        """One target per distinct ONNX INT8 recipe among the run's targets (the first that
        needs it): quant.ptq --for that target writes the file every such target runs."""
        seen: dict[str, TargetSpec] = {}
        for tg in self.s.targets:
            if tg.remote and tg.probed is None:
                continue        # its probe failed: the device is not benchmarked
            seen.setdefault(tg.recipe().tag, tg)
        return list(seen.values())

    def _quant_ort_id(self, p: Planned, tg: TargetSpec) -> list[str]:
        """The quant_ort stage that writes the ONNX INT8 file `tg` runs (none: a board or
        phone whose probe failed has no recipe)."""
        if tg.remote and tg.probed is None:
            return []
        many = len(self.recipe_targets()) > 1
        return [f"{p.tag}/quant_ort" + (f"/{tg.recipe().tag}" if many else "")]

    def int8_onnx_key(self, tg: TargetSpec) -> str:
        """The card key of the ONNX INT8 file benchmarked (and deployed) on `tg`."""
        return int8_key("onnx", tg.recipe().tag)

    def _executorch_stages(self, p: Planned, mk, calib: Path | None,
                           calib_note: str | None) -> list[Stage]:
        """.pte export and XNNPACK INT8, each run with the ExecuTorch venv's Python
        (the modules re-run themselves there); skipped in one line when it is missing."""
        t = p.tag

        def no_venv() -> str | None:
            return et_venv.missing_reason()

        def no_calib() -> str | None:
            return no_venv() or (calib_note if calib is None else None)
        return [
            mk("export_executorch", needs=[f"{t}/weights"], when=no_venv,
               timeout_s=TIMEOUTS["export_executorch"],
               prepare=self._argv(lambda: export_command(
                   "export.executorch", p.export_args(), self.art, self.weights_file(p),
                   python=self.py)),
               after=self._after_card(p)),
            mk("quant_executorch", needs=[f"{t}/export_executorch"], when=no_calib,
               timeout_s=TIMEOUTS["quant_executorch"],
               # PT2E calibration runs the observed torch graph, as TFLite's does: its count
               prepare=self._argv(lambda: et_ptq.command(
                   self.card(p), calib, self._num_calib(p, "tflite"), python=self.py,
                   source=p.source_arg)),
               after=self._after_card(p))]

    def _num_calib(self, p: Planned, backend: str) -> int:
        n = self.s.num_calib_tflite if backend == "tflite" else self.s.num_calib
        return min(n, RANDOM_NUM_CALIB) if self.weights_kind(p) == "random" else n

    def _argv(self, build):
        def prepare(stage: Stage) -> None:
            stage.argv = build()
        return prepare

    def _after_card(self, p: Planned):
        def after(stage: Stage, out: dict) -> None:
            self.refresh_card(p)
        return after

    def _acc_when(self, p: Planned, ev: Path | None, ev_note: str | None):
        def when() -> str | None:
            kind = self.weights_kind(p)
            if kind == "random":
                return "random-init weights: accuracy is meaningless (cost and latency still measured)"
            if ev is None:
                return (ev_note or "no test set") + " (give --eval-data)"
            return None
        return when

    def _after_accuracy(self, p: Planned, path: Path):
        def after(stage: Stage, out: dict) -> None:
            doc = collect.read_json(path)
            if isinstance(doc, dict):
                with self.results.lock:
                    self.results.model(p.tag)["accuracy"] = {
                        "data": _show(Path(str(doc.get("data", "")))), "n": doc.get("n"),
                        "results": doc.get("results") or {}}
        return after

    def _card_artifacts(self, p: Planned) -> dict:
        """The `artifacts` of the model's card in this run (written by the run's own stages)."""
        return (collect.read_json(self.card(p)) or {}).get("artifacts") or {}

    def _card_file(self, p: Planned, arts: dict, key: str) -> Path | None:
        """The model file `arts[key]` names beside the card, when it exists."""
        det = arts.get(key)
        f = self.card(p).parent / str(det.get("path", "")) if isinstance(det, dict) else None
        return f if f is not None and f.is_file() else None

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
                if key.startswith("pte") and "executorch" not in self.s.runtimes:
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
                    _show(out_json, self.run_dir)

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


def _show(p: Path, base: Path | None = None) -> str:
    base = base or REPO
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)
