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
The stages that run on a target (probe, bench, opprofile, accuracy_on, compare, why_int8)
are built in deploy/target_stages.py (`TargetStages`, a mixin of `Plan`).

deploy only orchestrates: every number comes from a stage's subprocess (or, for
cost and weights, from zoo and export called in process).
"""
from __future__ import annotations

import sys
from typing import Any
from pathlib import Path

from export import et_venv
from export.common import command as export_command
from export.litert_layout import to_argv as litert_argv
from export.mnn import command as export_mnn_command
from export.card import int8_key
from export.formats import Runtime
from quant import card_eval, et_ptq
from quant.ptq import command as ptq_command
from zoo.cli import variant_argv  # noqa: F401 - the zoo's export flags (Planned.export_args)

from . import collect
from .settings import RANDOM_NUM_CALIB, Planned, Settings, data_path
from .spec import TargetSpec
from .stages import Results, SkipStage, Stage
from .target_stages import TIMEOUTS, TargetStages, show_path, target_record  # noqa: F401


class Plan(TargetStages):
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
                rec.update(source=show_path(src), snapshot=show_path(snap, self.run_dir),
                           sha256=ck.sha256)
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
            g1 += self._prepare_stages(p, mk)
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

    def _prepare_stages(self, p: Planned, mk) -> list[Stage]:
        """Group 1 of one model, in order: cost, weights, the exports, the INT8 files."""
        t, s = p.tag, self.s
        g1 = [] if p.foreign else [mk("cost", run=self.run_cost(p))]
        g1.append(mk("weights", run=self.run_weights(p)))
        g1.append(mk("export_onnx", needs=[f"{t}/weights"], timeout_s=TIMEOUTS["export_onnx"],
                     prepare=self._argv(lambda: export_command(
                         "export.onnx", p.export_args(), self.art, self.weights_file(p),
                         python=self.py)),
                     after=self._after_card(p)))
        if not s.skip_tflite:
            g1.append(mk("export_tflite", needs=[f"{t}/weights"],
                         timeout_s=TIMEOUTS["export_tflite"], when=p.no_tflite_reason,
                         prepare=self._argv(lambda: export_command(
                             "export.tflite", p.export_args(), self.art,
                             self.weights_file(p), python=self.py)
                             + litert_argv(s.litert_rewrites)),
                         after=self._after_card(p)))
        if Runtime.MNN.value in s.runtimes:   # MNN converts the ONNX export (and checks against it)
            g1.append(mk("export_mnn", needs=[f"{t}/export_onnx"],
                         timeout_s=TIMEOUTS["export_mnn"],
                         prepare=self._argv(lambda: export_mnn_command(
                             self.card(p), python=self.py)),
                         after=self._after_card(p)))
        if p.foreign:  # no zoo variant to count: the export's card has the count
            g1.append(mk("cost", needs=[f"{t}/export_onnx"], run=self.card_cost(p)))
        calib, note = data_path("calib", p.dataset, s.data_for("calib", p.dataset))
        g1 += self._quant_stages(p, calib, note)
        if Runtime.EXECUTORCH.value in s.runtimes:
            g1 += self._executorch_stages(p, mk, calib, note)
        return g1

    def _quant_stages(self, p: Planned, calib: Path | None, calib_note: str | None
                      ) -> list[Stage]:
        """quant.ptq per runtime. ORT: one INT8 file per recipe the targets need (identical
        files are made once); TFLite full-integer is int8 activations on every target, MNN
        has one recipe: one file each."""
        t, s = p.tag, self.s
        export_of = {Runtime.ORT.value: "export_onnx", Runtime.TFLITE.value: "export_tflite",
                     Runtime.MNN.value: "export_mnn"}
        for r in s.runtimes:   # executorch: its own stages (_executorch_stages)
            note = f"runtime {r}: not built into this armq (no stages ran for it)"
            if r not in export_of and r != Runtime.EXECUTORCH.value and note not in self.notes:
                self.notes.append(note)
        quants: list[tuple[str, Any]] = []
        for backend in [r for r in s.runtimes if r in export_of]:
            quants += [("ort", tg) for tg in self.recipe_targets()] if backend == "ort" \
                else [(backend, None)]
        out = []
        for backend, tg in quants:
            sid = f"quant_{backend}" + (f"/{tg.recipe().tag}" if tg is not None and
                                         len(self.recipe_targets()) > 1 else "")
            out.append(Stage(id=f"{t}/{sid}", kind=f"quant_{backend}", model=t,
                             needs=[f"{t}/{export_of[backend]}"],
                             timeout_s=TIMEOUTS[f"quant_{backend}"],
                             when=(lambda b=backend: calib_note if calib is None else
                                   p.no_tflite_reason() if b == "tflite" else None),
                             prepare=self._argv(lambda b=backend, tg=tg: ptq_command(
                                 p.tag, calib, b, self._num_calib(p, b), self.art, python=self.py,
                                 target=tg.recipe_target if tg else None,
                                 source=p.source_arg if b == "tflite" else None,
                                 litert_rewrites=s.litert_rewrites)),
                             after=self._after_card(p)))
            if calib_note and calib is not None and calib_note not in self.notes:
                self.notes.append(calib_note)
        return out

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
                        "data": show_path(Path(str(doc.get("data", "")))), "n": doc.get("n"),
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
