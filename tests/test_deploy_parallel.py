"""deploy's first group side by side: the Runner starts a stage of a parallel group once the
stages of the group it needs have ended, and one model's card updates take turns
(export.card.card_lock), so stages writing one card side by side lose no entry."""
from __future__ import annotations

import threading
import time

from deploy.stages import OK, SKIPPED, Results, Runner, Stage


def _runner(tmp_path, stages, jobs=2) -> Runner:
    res = Results(tmp_path / "results.json", {"models": {}, "stages": []})
    return Runner(res, tmp_path, stages, jobs=jobs, out=open("/dev/null", "w"))


def test_parallel_group_waits_for_what_a_stage_needs(tmp_path):
    log: dict[str, tuple[float, float]] = {}

    def work(name, secs, fail=False):
        def run(stage):
            t0 = time.monotonic()
            time.sleep(secs)
            log[name] = (t0, time.monotonic())
            if fail:
                raise RuntimeError("broken")
            return {}
        return run
    # listed with the dependent first: the order of the list must not matter
    stages = [Stage(id="b", kind="x", needs=["a"], run=work("b", 0.05)),
              Stage(id="a", kind="x", run=work("a", 0.4)),
              Stage(id="c", kind="x", run=work("c", 0.3)),
              Stage(id="d", kind="x", needs=["e"], run=work("d", 0.01)),
              Stage(id="e", kind="x", run=work("e", 0.01, fail=True))]
    r = _runner(tmp_path, stages)
    r.run_all([(stages, True)])
    by = {s.id: s for s in stages}
    assert log["b"][0] >= log["a"][1]                      # b waited for a
    assert log["c"][0] < log["a"][1] and log["a"][0] < log["c"][1]   # a and c overlapped
    assert by["b"].status == OK and by["c"].status == OK
    assert by["d"].status == SKIPPED and "needs x" in by["d"].reason and "d" not in log


def test_card_updates_take_turns(tmp_path):
    """Eight writers add one artifact each to one card at once (read, change, write back):
    with card_lock every entry survives."""
    from export.card import ModelCard, card_lock, load_card, save_card

    card_path = tmp_path / "m.json"
    save_card(ModelCard(name="m", variant={}, input={"shape": [1, 3, 32, 32]}, output={},
                        preprocessing={"mean": [0.5] * 3, "std": [0.25] * 3, "resize": 32,
                                       "input_size": 32}, class_names=["a", "b"]), card_path)
    (tmp_path / "m.onnx").write_bytes(b"x")

    def writer(i: int) -> None:
        with card_lock(card_path):
            card = load_card(card_path)
            time.sleep(0.02)        # another writer would read the old card here
            card.record_artifact(card_path, f"k{i}", tmp_path / "m.onnx")
            save_card(card, card_path)
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(load_card(card_path).artifacts) == {f"k{i}" for i in range(8)}


def test_demo_plans_every_stage_kind(tmp_path):
    """`make demo`'s sweep (deploy/demo.toml) plans every stage kind a deploy run has, with
    the first group side by side (the two-minute budget rests on it) and one ONNX Runtime
    quantization for both targets (cortex-a72 takes this x86 host's U8S8 recipe too)."""
    from deploy.cli import build_parser
    from deploy.plan import Plan
    from deploy.settings import REPO, Settings, resolve_all

    s = Settings(build_parser().parse_args(["--sweep", str(REPO / "deploy" / "demo.toml")]))
    planned = resolve_all(s)
    res = Results(tmp_path / "results.json", {"models": {}, "stages": []})
    plan = Plan(s, planned, tmp_path, res, None)
    plan.side_by_side = True
    groups = plan.stages()
    kinds = {(st.kind, st.target) for g, _ in groups for st in g}
    want = {"cost", "weights", "export_onnx", "export_tflite", "quant_ort", "quant_tflite",
            "accuracy", "opprofile", "bench", "accuracy_on", "compare", "why_int8"}
    assert {k for k, _ in kinds} == want
    assert ("bench", "local") in kinds and any(k == "bench" and t.startswith("qemu:")
                                               for k, t in kinds)
    assert groups[0][1] is True and any(st.kind == "accuracy_on" for st in groups[0][0])
    assert [st.kind for st in groups[0][0]][:2] == ["weights", "export_tflite"]
    if {t.recipe().tag for t in s.targets} == {s.targets[0].recipe().tag}:
        assert sum(st.kind == "quant_ort" for g, _ in groups for st in g) == 1
    assert s.limit_eval < 2000 and 0 < s.target_eval < 200     # smaller than the defaults
