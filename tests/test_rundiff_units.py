"""deploy.rundiff's rules on small hand-made results.json documents (no pipeline run):
which fields must match exactly, which are timings, and the QEMU instruction-count
tolerance (the runs' own variation, read from the benchmark files each run kept).
tests/test_deploy.py runs it on a real deploy run; tests/test_deploy_scale.py on local
vs Ray."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from deploy.rundiff import compare, instruction_counts, main

TAG = "m"
A76 = "qemu:cortex-a76"


def _doc() -> dict:
    """A two-target run of one model: local and an emulated Cortex-A76."""
    bench = {"file": f"{TAG}.onnx", "size_bytes": 1000, "runtime": "onnxruntime", "threads": 1,
             "int8": False, "median_ms": 5.0}
    return {
        "format": "armq-deploy/1", "run": {"id": "r", "status": "ok"},
        "targets": [{"id": "local", "emulated": False, "recipe": {"name": "u8s8"}},
                    {"id": A76, "emulated": True, "recipe": {"name": "s8s8"}}],
        "stages": [{"id": f"{TAG}/export_onnx", "kind": "export_onnx", "status": "ok",
                    "seconds": 3.0},
                   {"id": f"{TAG}/why_int8/local", "kind": "why_int8", "target": "local",
                    "status": "ok"},
                   {"id": f"{TAG}/why_int8/{A76}", "kind": "why_int8", "target": A76,
                    "status": "ok"}],
        "models": {TAG: {
            "cost": {"macs": 40e6}, "weights": {"sha256": "ab" * 32},
            "artifacts": {"onnx": {"size_bytes": 1000, "sha256": "cd" * 32, "ops": 12,
                                   "seconds": 2.0}},
            "accuracy": {"results": {"onnx": {"n": 200, "top1": 88.0, "seconds": 2.6}}},
            "bench": {"local": {"onnx": {**bench, "emulated": False}},
                      A76: {"onnx": {**bench, "emulated": True, "median_ms": 900.0,
                                     "instructions": 1_000_000,
                                     "instructions_spread_pct": 0.0}}},
            "profile": {"onnx": {"categories": {"conv": {"nodes": 9, "pct": 40.0}}}},
        }},
    }


def _write(root: Path, name: str, doc: dict, regions: list[int] | None = None,
           rel: str = "bench/a76.json") -> Path:
    d = root / name
    d.mkdir(parents=True)
    if regions is not None:
        doc["bench_files"] = {A76: {TAG: rel}}
        raw = {"results": [{"model": {"file": f"{TAG}.onnx"},
                            "instructions": {"warmup": regions[:1], "timed": regions[1:]}}]}
        (d / "bench").mkdir()
        (d / "bench" / "a76.json").write_text(json.dumps(raw))
    (d / "results.json").write_text(json.dumps(doc))
    return d


def _cmp(tmp_path, a: dict, b: dict, **kw):
    return compare(a, _write(tmp_path, "a", a), b, _write(tmp_path, "b", b), **kw)


def _edited(edit) -> dict:
    d = _doc()
    edit(d)
    return d


def _m(d: dict) -> dict:
    return d["models"][TAG]


def test_identical_runs_agree_and_timings_are_not_compared(tmp_path):
    c = _cmp(tmp_path, _doc(), _doc())
    assert c.agree and c.differences == [] and c.fields >= 15 and c.counts == 1

    def timings(d):
        d["stages"][0]["seconds"] = 99.0
        _m(d)["artifacts"]["onnx"]["seconds"] = 9.0
        _m(d)["accuracy"]["results"]["onnx"]["seconds"] = 9.0
        _m(d)["bench"]["local"]["onnx"]["median_ms"] = 6.5
        _m(d)["profile"]["onnx"]["categories"]["conv"]["pct"] = 45.0
        d["stages"][1]["status"] = "skipped"   # local why_int8: decided by measured latency
    assert _cmp(tmp_path / "t", _doc(), _edited(timings)).agree


@pytest.mark.parametrize("edit,where", [
    (lambda d: _m(d)["accuracy"]["results"]["onnx"].update(top1=87.5),
     f"models.{TAG}.accuracy.onnx.top1: 88.0 vs 87.5"),
    (lambda d: _m(d)["artifacts"]["onnx"].update(sha256="ef" * 32),
     f"models.{TAG}.artifacts.onnx.sha256"),
    (lambda d: _m(d)["weights"].update(sha256="00" * 32), f"models.{TAG}.weights"),
    (lambda d: _m(d)["cost"].update(macs=41e6), f"models.{TAG}.cost.macs"),
    (lambda d: _m(d)["bench"]["local"]["onnx"].update(file=f"{TAG}.u8s8.int8.onnx"),
     f"models.{TAG}.bench.local.onnx.file"),
    (lambda d: _m(d)["bench"]["local"]["onnx"].update(threads=4),
     f"models.{TAG}.bench.local.onnx.threads"),
    (lambda d: _m(d)["profile"]["onnx"]["categories"]["conv"].update(nodes=10),
     f"models.{TAG}.profile_nodes.onnx.conv"),
    (lambda d: d["targets"][0]["recipe"].update(name="u8s8r"), "targets.local: 'u8s8' vs 'u8s8r'"),
    (lambda d: d["stages"][0].update(status="failed"), f"stages.{TAG}/export_onnx: 'ok' vs 'failed'"),
    # on QEMU, whether why_int8 ran follows from instruction counts: compared
    (lambda d: d["stages"][2].update(status="skipped"), f"stages.{TAG}/why_int8/{A76}"),
    (lambda d: d["models"].pop(TAG), f"models.{TAG}: only in run A"),
], ids=["top1", "sha256", "weights", "macs", "bench-file", "threads", "profile-nodes",
        "recipe", "stage-status", "why-int8-qemu", "model-missing"])
def test_each_non_timing_change_is_one_line(tmp_path, edit, where):
    c = _cmp(tmp_path, _doc(), _edited(edit))
    assert not c.agree and any(line.startswith(where) for line in c.differences), c.differences
    if "only in run" not in where:
        assert len(c.differences) == 1, c.differences


def test_instruction_counts_within_the_runs_own_variation(tmp_path):
    a = _write(tmp_path, "a", _doc(), [1_000_040, 1_000_000])       # own variation 0.004 %
    assert instruction_counts(json.loads((a / "results.json").read_text()), a)[
        f"{TAG}@{A76}:onnx"].variation_pct == pytest.approx(0.004, rel=1e-3)

    def run(name: str, count: int, regions: list[int], rel: str = "bench/a76.json"):
        d = _doc()
        _m(d)["bench"][A76]["onnx"]["instructions"] = count
        return d, _write(tmp_path, name, d, regions, rel)

    da, a = run("ra", 1_000_000, [1_000_040, 1_000_000])
    near = run("near", 1_000_030, [1_000_030, 1_000_030])           # 0.003 % apart: agree
    far = run("far", 1_000_100, [1_000_100, 1_000_100])             # 0.01 % apart: differ
    c = compare(da, a, *near)
    assert c.agree and c.counts == 1 and c.worst_count_pct == pytest.approx(0.003)
    c = compare(da, a, *far)
    assert not c.agree and c.differences[0].startswith(f"{TAG}@{A76}:onnx instructions: "
                                                       "1000000 vs 1000100 (0.0100 % apart")
    assert compare(da, a, *far, tolerance_pct=0.02).agree         # --tolerance-pct
    assert not compare(da, a, *near, tolerance_pct=0.001).agree


def test_a_results_file_cannot_point_outside_its_run_folder(tmp_path):
    """bench_files naming a file outside the run folder is ignored (a results.json is data):
    the spread recorded in results.json (0 %) is the tolerance then."""
    outside = tmp_path / "elsewhere"
    _write(outside, "x", _doc(), [1_000_000, 900_000])              # 10 % variation
    da = _doc()
    _m(da)["bench"][A76]["onnx"]["instructions"] = 1_000_000
    a = _write(tmp_path, "a", da, None)
    da["bench_files"] = {A76: {TAG: "../elsewhere/x/bench/a76.json"}}
    (a / "results.json").write_text(json.dumps(da))
    counts = instruction_counts(da, a)
    assert counts[f"{TAG}@{A76}:onnx"].variation_pct == 0.0
    db = copy.deepcopy(da)
    _m(db)["bench"][A76]["onnx"]["instructions"] = 1_000_500       # 0.05 % apart
    assert not compare(da, a, db, _write(tmp_path, "b", db, None)).agree


def test_cli_exit_status(tmp_path, capsys):
    a = _write(tmp_path, "a", _doc())
    b = _write(tmp_path, "b", _edited(lambda d: _m(d)["accuracy"]["results"]["onnx"]
                                      .update(top1=87.5)))
    assert main([str(a), str(a / "results.json")]) == 0
    assert "agree:" in capsys.readouterr().out
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert f"differs: models.{TAG}.accuracy.onnx.top1: 88.0 vs 87.5" in out and "1 different" in out
