"""deploy: spec parsing, the stage runner, and one small real pipeline run.

The real run (module fixture) takes the shipped ShuffleNet V1 (g=3, CIFAR-10)
through export.onnx, quant.ptq (ONNX Runtime), accuracy on 200 shipped test
images, android_bench on the local target and the per-op profile, plus a QEMU
target that cannot work (ARMQ_QEMU points nowhere): that stage must fail, be
marked in the report, and leave every other stage's results in place.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHIPPED_CKPT, SHIPPED_TESTSET, interrupt_deploy, run_cli

from deploy.spec import SpecError, load_sweep, parse_model_list, parse_model_spec, parse_target
from deploy.stages import FAILED, OK, SKIPPED, Results, Runner, Stage
from export.card import int8_filename, int8_key
from quant.config import recipe_for_target

TAG = "shufflenet_v1_g3_w1_cifar10"
# The ONNX INT8 file this host's recipe gives (U8S8 on x86): what the local target runs.
K8 = int8_key("onnx", recipe_for_target("local").tag)


# ---- specs -------------------------------------------------------------------------------

def test_model_spec_parsing():
    s = parse_model_spec("shufflenet_v1:width=0.5:groups=3")
    assert (s.name, s.params) == ("shufflenet_v1", {"width": 0.5, "groups": 3})
    s = parse_model_spec("mobilenet_v1:w=0.75:dataset=cifar10:r=64")
    assert s.params == {"width": 0.75} and s.dataset == "cifar10" and s.input_size == 64
    assert [m.name for m in parse_model_list("alexnet, shufflenet_v1:width=2,")] == \
        ["alexnet", "shufflenet_v1"]


@pytest.mark.parametrize("text,needle", [
    ("shufflenet_v1:width", "is not key=value"),
    ("shufflenet_v1:width=abc", "not a number"),
    ("shufflenet_v1:groups=2.5", "not an integer"),
    ("shufflenet_v1:colour=red", "unknown key 'colour'"),
    ("shufflenet_v1:width=1:width=2", "given twice"),
    ("shufflenet_v1:dataset=mnist", "dataset=mnist"),
    ("9lives", "not a model name"),
    ("", "empty model spec"),
])
def test_model_spec_errors(text, needle):
    with pytest.raises(SpecError, match=needle):
        parse_model_spec(text)


def test_targets():
    assert parse_target("qemu:cortex-a72").id == "qemu:cortex-a72"
    assert parse_target("qemu").cpu == "cortex-a76"
    assert parse_target("local").emulated is False
    assert parse_target("ssh:Pi5-1") == parse_target("SSH:Pi5-1")    # device names keep case
    assert parse_target("adb:pixel-7").id == "adb:pixel-7" and parse_target("ssh").device is None
    for bad in ("qemu:cortex-z9", "android", "ssh:-oProxyCommand=x", "adb:a b", "local:x"):
        with pytest.raises(SpecError):
            parse_target(bad)


def test_sweep_file(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('dataset = "imagenet"\nmodels = ["alexnet"]\nruns = { local = 7, qemu = 1 }\n'
                 '[[model]]\nname = "shufflenet_v1"\nwidth = 0.5\n')
    d = load_sweep(p)
    assert [m.text for m in d["models"]] == ["alexnet", "shufflenet_v1:width=0.5"]
    assert d["runs"] == {"local": 7, "qemu": 1} and d["dataset"] == "imagenet"
    p.write_text('models = ["alexnet"]\nspeed = 3\n')
    with pytest.raises(SpecError, match="unknown key 'speed'"):
        load_sweep(p)
    p.write_text('models = [\n')
    with pytest.raises(SpecError, match="not valid TOML"):
        load_sweep(p)


def test_table8_sweep_is_valid():
    d = load_sweep(REPO / "deploy" / "table8.toml")
    assert [m.name for m in d["models"]] == ["shufflenet_v1"] * 3 + ["alexnet", "mobilenet_v1"]
    assert d["baseline"] == "alexnet"


def test_zoo_sweep_names_every_seed_model_and_resolves():
    """deploy/zoo.toml (issue: the results table) resolves, variant by variant, in the zoo."""
    import zoo

    d = load_sweep(REPO / "deploy" / "zoo.toml")
    tags = []
    for m in d["models"]:
        tags.append(zoo.resolve_variant(m.name, d["dataset"], m.input_size, m.num_classes,
                                        **m.params).tag)
    assert len(set(tags)) == len(tags) == 21 and d["baseline"] == "alexnet"
    assert "hetconv_vgg16_p1_cifar10" in tags   # HetConv's own baseline (the paper's VGG-16)
    for seed in ("mobilenet_v1", "mobilenet_v2", "ghostnet", "mobilenext", "shiftnet",
                 "hetconv_vgg16", "vgg16", "resnet18", "mobilenet_v3_small", "alexnet"):
        assert any(t.startswith(seed + "_") or t == seed for t in tags), seed
    assert sum(t.startswith("shufflenet_v1_") for t in tags) == 7


@pytest.mark.parametrize("args,needle", [
    (["--models", "shufflenet_v1:width"], "is not key=value"),
    (["--models", "no_such_net"], "unknown model 'no_such_net'"),
    (["--models", "shufflenet_v1:width=0.3"], "--width 0.3"),
    (["--targets", "qemu:cortex-z9"], "unknown qemu cpu"),
    (["--runs", "0"], "--runs must be at least 1"),
    (["--target-eval", "-1"], "--target-eval must be 0 (off) or more"),
    (["--models", "alexnet", "--sweep", "x.toml"], "not allowed with"),
])
def test_cli_usage_errors_are_one_line(args, needle, tmp_path):
    r = run_cli("deploy", *args, "--out", tmp_path / "runs", timeout=900)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("python -m deploy: error: ") \
        and needle in lines[0], r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---- the stage runner (fast, no model) ---------------------------------------------------

def test_runner_isolates_failures(tmp_path):
    py = sys.executable
    doc = {"format": "armq-deploy/1", "models": {}, "stages": []}
    res = Results(tmp_path / "results.json", doc)
    stages = [
        Stage(id="a", kind="a", argv=[py, "-c", "import sys; print('working'); "
                                      "sys.exit('prog: error: the reason is here')"]),
        Stage(id="b", kind="b", argv=[py, "-c", "print('needs a')"], needs=["a"]),
        Stage(id="c", kind="c", argv=[py, "-c", "print('independent')"]),
        Stage(id="d", kind="d", run=lambda s: {"x": 1}),
        Stage(id="e", kind="e", argv=[py, "-c", "import time; time.sleep(30)"], timeout_s=1.5),
    ]
    r = Runner(res, tmp_path, stages, jobs=2, out=open(tmp_path / "progress.txt", "w"))
    r.run_all([(stages[:2], False), (stages[2:], True)])
    by = {s["id"]: s for s in json.loads((tmp_path / "results.json").read_text())["stages"]}
    assert by["a"]["status"] == FAILED and by["a"]["reason"] == "prog: error: the reason is here"
    assert by["b"]["status"] == SKIPPED and "needs a" in by["b"]["reason"]
    assert by["c"]["status"] == OK and by["d"]["status"] == OK and by["d"]["outputs"] == {"x": 1}
    assert by["e"]["status"] == FAILED and "no result after" in by["e"]["reason"]
    assert "working" in (tmp_path / by["a"]["log"]).read_text()


# ---- one real run ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    for f in (SHIPPED_CKPT, SHIPPED_TESTSET):
        if not f.exists():
            pytest.fail(f"shipped asset missing: {f}")
    out = tmp_path_factory.mktemp("deploy") / "runs"
    r = run_cli("deploy", "--models", "shufflenet_v1:groups=3", "--dataset", "cifar10",
                "--targets", "local,qemu:cortex-a72", "--skip-tflite", "--limit-eval", "200",
                "--runs", "5", "--warmup", "1", "--jobs", "1", "--out", out,
                "--publish", out.parent / "results.md", timeout=900,
                env={"ARMQ_QEMU": "/nonexistent/qemu-aarch64", "ARMQ_NO_APT": "1"})
    dirs = [d for d in out.iterdir() if d.is_dir() and not d.is_symlink()]
    assert len(dirs) == 1, (r.stdout, r.stderr)
    return r, dirs[0]


def _doc(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_run_exit_status_and_summary(run):
    r, run_dir = run
    assert r.returncode == 1, r.stderr[-3000:]          # one stage failed, on purpose
    assert "per stage, summed over models" in r.stdout and f"report: {run_dir / 'report.html'}" in r.stdout
    for kind in ("export_onnx", "quant_ort", "accuracy", "bench local", "opprofile"):
        assert kind in r.stdout
    assert "FAILED: bench qemu:cortex-a72" in r.stdout
    assert "[" in r.stderr and "export_onnx" in r.stderr     # progress lines


def test_results_schema(run):
    _, run_dir = run
    d = _doc(run_dir)
    assert d["format"] == "armq-deploy/1" and d["run"]["status"] == "failed"
    assert {t["id"] for t in d["targets"]} == {"local", "qemu:cortex-a72"}
    st = {s["id"]: s for s in d["stages"]}
    for sid in ("cost", "weights", "export_onnx", "accuracy", "bench/local", "opprofile"):
        assert st[f"{TAG}/{sid}"]["status"] == OK, st[f"{TAG}/{sid}"]
        assert st[f"{TAG}/{sid}"]["seconds"] is not None
    # one quantization per recipe the targets need; identical files are made once
    recipes = {recipe_for_target(t).tag for t in ("local", "qemu:cortex-a72")}
    quants = [s for s in d["stages"] if s["kind"] == "quant_ort"]
    assert len(quants) == len(recipes) and all(s["status"] == OK for s in quants)
    assert all(t["recipe"]["name"] == recipe_for_target(t["id"]).tag for t in d["targets"])
    q = st[f"{TAG}/bench/qemu:cortex-a72"]
    assert q["status"] == FAILED and "ARMQ_QEMU" in q["reason"] and q["log"]
    # each target runs the file of its own recipe
    a72_file = int8_filename(TAG, "onnx", recipe_for_target("qemu:cortex-a72").tag)
    assert any(a.endswith("/" + a72_file) for a in q["command"])
    m = d["models"][TAG]
    assert m["weights"]["kind"] == "shipped" and len(m["weights"]["sha256"]) == 64
    assert 30e6 < m["cost"]["macs"] < 60e6 and "dwconv" in m["cost"]["by_op"]
    assert set(m["artifacts"]) == {"onnx"} | {int8_key("onnx", r) for r in recipes}
    assert all(a["size_bytes"] > 0 for a in m["artifacts"].values())
    acc = m["accuracy"]["results"]
    # Measured on these 200 shipped images (this fixture's deploy command, x86 U8S8): FP32
    # top-1 88.0 % (176/200; the checkpoint's full test set: 88.3 %), INT8 88.5 %, agreement
    # 99.5 % (199/200), SQNR 27.1 dB. Margins: 4 images either way for FP32 (runtime or BLAS
    # changes flip near-ties), 6 flipped decisions for INT8 (calibration across ORT versions,
    # another host's recipe) -- a broken preprocessing or quantizer lands far outside.
    assert acc["onnx"]["n"] == 200 and 86.0 <= acc["onnx"]["top1"] <= 90.0
    assert acc[K8]["ref"] == "onnx" and acc[K8]["n"] == 200 and acc[K8]["agreement"] >= 97.0
    assert abs(acc[K8]["top1"] - acc["onnx"]["top1"]) <= 3.0 and acc[K8]["sqnr_db"] >= 20.0
    b = m["bench"]["local"]
    assert b["onnx"]["median_ms"] > 0 and b[K8]["median_ms"] > 0 and set(b) == {"onnx", K8}
    assert b["onnx"]["emulated"] is False and len(b["onnx"]["ci95_ms"]) == 2
    prof = m["profile"]["onnx"]
    assert prof["categories"]["depthwise"]["nodes"] == 16      # one per ShuffleNet unit
    assert prof["categories"]["conv"]["pct"] > 0
    assert (run_dir / "artifacts" / int8_filename(TAG, "onnx", recipe_for_target("local").tag)).is_file()
    # each stage's command line comes from its own package (deploy only orchestrates)
    assert st[f"{TAG}/accuracy"]["command"][1:4] == ["-m", "quant.evaluate", "--card"]
    assert st[f"{TAG}/opprofile"]["command"][1:3] == ["-m", "android_bench.profile"]


def test_report_html_and_md(run):
    _, run_dir = run
    html = (run_dir / "report.html").read_text()
    assert html.count("<table") >= 3 and "data:image/png;base64," in html
    assert "median latency (ms)" in html and "agreement" in html
    assert "EMULATED" in html                        # a QEMU target was asked for
    assert "fail-box" in html and "bench qemu:cortex-a72" in html and "ARMQ_QEMU" in html
    assert "<tr class='fail'>" in html
    md = (run_dir / "report.md").read_text()
    assert "| model | format | precision | target |" in md and "](plots/" in md
    for name in ("macs_vs_latency", "int8_speedup", "op_breakdown", "accuracy"):
        png = run_dir / "plots" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name
    assert "Transpose" in html and "Depthwise convolutions" in html   # generated explanations
    # the compare stage's output is read back: same arithmetic, same local INT8 speed-up
    assert "Cross-check: android_bench.compare" in md and "for 1 INT8/FP32 pair." in md
    assert "MISMATCH" not in md


def test_why_int8_names_the_op_classes_that_hold_int8_back(run, tmp_path):
    """Where best INT8 / best FP32 stays under 2.6x, the why_int8 stage splits the run's
    real ONNX pair per op class with the shipped constants: each column sums to its
    predicted total; results.json keeps it, the report shows it. The QEMU target whose
    bench failed has no pair: its stage is skipped."""
    from android_bench import latency_model
    from android_bench.perfmodel.breakdown import ROWS
    from deploy.analysis import INT8_GOAL, best_per_target
    from deploy.collect import summarize_breakdown

    _, run_dir = run
    d = _doc(run_dir)
    st = {s["id"]: s for s in d["stages"]}
    assert st[f"{TAG}/why_int8/qemu:cortex-a72"]["status"] == SKIPPED
    best = next(b for b in best_per_target(d) if b["target"] == "local")
    local = st[f"{TAG}/why_int8/local"]
    if best["speedup"] >= INT8_GOAL:   # a wall-clock ratio: either side of 2.6x on this host
        assert local["status"] == SKIPPED and "nothing to explain" in local["reason"]
    else:
        assert local["status"] == OK and d["models"][TAG]["int8_why"]["local"]["classes"]
    # the stage's own command on the run's real pair, as the stage runs it
    art = run_dir / "artifacts"
    out = tmp_path / "why.json"
    argv = latency_model.command(art / f"{TAG}.onnx", art / int8_filename(
        TAG, "onnx", recipe_for_target("local").tag), "local", out)
    r = run_cli(argv[2], *argv[3:], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    why = summarize_breakdown(json.loads(out.read_text()))
    assert why["fp32"] == {"file": f"{TAG}.onnx", "key": "onnx"} and why["int8"]["key"] == K8
    rows = why["classes"]
    assert [x["class"] for x in rows] == list(ROWS)
    assert sum(x["int8"] for x in rows) == pytest.approx(why["int8_predicted"])
    assert sum(x["fp32"] for x in rows) == pytest.approx(why["fp32_predicted"])
    assert sum(x["int8_share"] for x in rows) == pytest.approx(1.0)
    by = {x["class"]: x for x in rows}
    assert by["depthwise"]["int8"] > 0 and by["grouped"]["int8"] > 0 and by["qdq"]["fp32"] == 0
    # the report of a run whose local INT8 reached only 2x (as on cortex-a76)
    d["models"][TAG]["int8_why"] = {"local": why}
    b = d["models"][TAG]["bench"]["local"]
    b[K8]["median_ms"] = b["onnx"]["median_ms"] / 2
    (tmp_path / "results.json").write_text(json.dumps(d))
    r = run_cli("deploy.report", tmp_path / "results.json", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "report.md").read_text()
    sec = md[md.index("## What holds INT8 back"):md.index("## Stages")]
    assert f"### {best['label']} on local: best INT8" in sec and "2.00x" in sec \
        and "under 2.6x" in sec
    assert "| op class | share of INT8 cost |" in sec and "| depthwise |" in sec
    assert f"{TAG}.onnx / {why['int8']['file']}" in sec and "Held back most by: " in sec
    # the QEMU target measured nothing: no section for it
    assert "on qemu:cortex-a72" not in sec
    assert "id='why-int8'" in (tmp_path / "report.html").read_text()


def test_report_rerenders_partial_results(run, tmp_path):
    _, run_dir = run
    d = _doc(run_dir)
    # what Ctrl-C after the exports would have left: no accuracy, bench or profile yet
    for k in ("accuracy", "bench", "profile"):
        d["models"][TAG].pop(k, None)
    d["run"]["status"] = "running"
    part = tmp_path / "results.json"
    part.write_text(json.dumps(d))
    r = run_cli("deploy.report", part, timeout=300)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "report.html").read_text()
    assert "has not finished" in html and "<table" in html
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run_cli("deploy.report", bad, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("python -m deploy.report: error:")


def test_rundiff_names_what_changed(run, tmp_path):
    """deploy.rundiff: a run agrees with itself; a changed accuracy figure or a missing model
    is one line each; QEMU instruction counts pass within the runs' own variation between
    inferences (from the android_bench files they kept), not beyond it."""
    _, run_dir = run
    r = run_cli("deploy.rundiff", run_dir, run_dir / "results.json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "agree:" in r.stdout and " 0 different" in r.stdout

    def variant(name: str, edit) -> Path:
        d = _doc(run_dir)
        edit(d)
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(d))
        return tmp_path / name

    def fewer_right(d):
        d["models"][TAG]["accuracy"]["results"][K8]["top1"] -= 0.5
    b = variant("acc", fewer_right)
    r = run_cli("deploy.rundiff", run_dir, b, timeout=120)
    assert r.returncode == 1
    assert f"differs: models.{TAG}.accuracy.{K8}.top1:" in r.stdout and "1 different" in r.stdout
    def flip(target):
        def edit(d):
            (st,) = [s for s in d["stages"] if s["kind"] == "why_int8" and s["target"] == target]
            st["status"] = SKIPPED if st["status"] != SKIPPED else OK
        return edit
    # whether a real CPU's why_int8 ran follows from measured latency: not compared; on QEMU
    # it follows from instruction counts: compared
    assert run_cli("deploy.rundiff", run_dir, variant("why_local", flip("local")),
                   timeout=120).returncode == 0
    r = run_cli("deploy.rundiff", run_dir, variant("why_a72", flip("qemu:cortex-a72")), timeout=120)
    assert r.returncode == 1 and f"stages.{TAG}/why_int8/qemu:cortex-a72:" in r.stdout
    b = variant("nomodel", lambda d: d["models"].pop(TAG))
    r = run_cli("deploy.rundiff", run_dir, b, timeout=120)
    assert r.returncode == 1 and f"differs: models.{TAG}: only in run A" in r.stdout

    def emulated(count: int, regions: list[int], rel: str = "bench/a76.json"):
        def edit(d):
            d["models"][TAG]["bench"]["qemu:cortex-a76"] = {"onnx": {
                "file": f"{TAG}.onnx", "emulated": True, "instructions": count,
                "instructions_spread_pct": 0.0}}
            d["bench_files"] = {"qemu:cortex-a76": {TAG: rel}}
        return edit, {"results": [{"model": {"file": f"{TAG}.onnx"},
                                   "instructions": {"warmup": regions[:1], "timed": regions[1:]}}]}

    def with_counts(name: str, count: int, regions: list[int], rel: str = "bench/a76.json"):
        edit, raw = emulated(count, regions, rel)
        d = variant(name, edit)
        (d / "bench").mkdir()
        (d / "bench" / "a76.json").write_text(json.dumps(raw))
        return d
    a = with_counts("ia", 1_000_000, [1_000_040, 1_000_000])        # own variation 0.004 %
    near = with_counts("ib", 1_000_030, [1_000_030, 1_000_030])     # 0.003 % apart
    far = with_counts("ic", 1_000_100, [1_000_100, 1_000_100])      # 0.01 % apart
    r = run_cli("deploy.rundiff", a, near, timeout=120)
    assert r.returncode == 0 and "1 QEMU instruction counts compared" in r.stdout, r.stdout
    r = run_cli("deploy.rundiff", a, far, timeout=120)
    assert r.returncode == 1 and "(0.0100 % apart, tolerance 0.0040 %)" in r.stdout, r.stdout
    r = run_cli("deploy.rundiff", a, far, "--tolerance-pct", "0.02", timeout=120)
    assert r.returncode == 0, r.stdout
    # a results.json names files of its own run folder only: this one is not read, so
    # the spread recorded in results.json (0 here) is the tolerance
    outside = with_counts("id", 1_000_000, [1_000_040, 1_000_000], rel="../ia/bench/a76.json")
    r = run_cli("deploy.rundiff", outside, near, timeout=120)
    assert r.returncode == 1 and "tolerance 0.0000 %" in r.stdout, r.stdout
    r = run_cli("deploy.rundiff", run_dir, tmp_path / "missing", timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("python -m deploy.rundiff: error:")
    assert len(r.stderr.strip().splitlines()) == 1


def test_accuracy_on_the_targets_own_kernels(run, tmp_path):
    """quant.evaluate --on qemu:cortex-a72 scores the a72's U8S8 file under that emulated
    core, beside the same file on this host (same images). Without VNNI, x86 saturates
    U8S8's int16 pair sums and the a72 does not: the emulated outputs are much closer to
    FP32. deploy plans that stage for every QEMU target (here QEMU points nowhere: it fails
    in one line, like the benchmark)."""
    _, run_dir = run
    st = {s["id"]: s for s in _doc(run_dir)["stages"]}
    planned = st[f"{TAG}/accuracy_on/qemu:cortex-a72"]
    assert planned["status"] == FAILED and "ARMQ_QEMU" in planned["reason"], planned
    f = run_dir / "artifacts" / int8_filename(TAG, "onnx", "u8s8")
    r = run_cli("quant.evaluate", "--model", f, "--on", "qemu:cortex-a72", "--data",
                SHIPPED_TESTSET, "--limit", "40", "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["on"] == "qemu:cortex-a72" and d["ref_on"] == "host"
    assert d["n"] == d["host"]["n"] == 40
    if recipe_for_target("local").reduce_range:       # x86 without VNNI: it saturates here
        assert d["sqnr_db"] > d["host"]["sqnr_db"] + 6, d
        assert d["agreement"] >= d["host"]["agreement"], d
    else:
        assert d["sqnr_db"] > d["host"]["sqnr_db"] - 1, d
    for args, needle in ((["--on", "ssh:pi5"], "not a target (local, qemu:<cpu>"),
                         (["--host", "pi@board"], "--host says how to reach a board or phone"),
                         (["--on", "ssh"], "--target ssh needs --host"),
                         (["--on", "qemu:cortex-z9"], "unknown qemu cpu 'cortex-z9'"),
                         (["--on", "qemu:cortex-a72", "--host-graph"], "--host-graph")):
        r = run_cli("quant.evaluate", "--model", f, "--data", SHIPPED_TESTSET, *args, timeout=120)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("quant.evaluate", "--card", f.with_name(f"{TAG}.json"), "--data", SHIPPED_TESTSET,
                "--on", "qemu:cortex-a72", timeout=120)
    assert r.returncode == 2 and "--on runs one --model" in r.stderr


def test_report_shows_accuracy_on_the_targets_kernels(run, tmp_path):
    """results.json `accuracy_on_target` (deploy's accuracy_on stage) -> the report's table
    (on target / on this host, same images) and one sentence per target in the model's block."""
    _, run_dir = run
    d = _doc(run_dir)
    d["models"][TAG]["accuracy_on_target"] = {"qemu:cortex-a72": {
        "key": "onnx_int8_u8s8", "file": f"{TAG}.u8s8.int8.onnx", "n": 200, "top1": 88.5,
        "top5": 100.0, "agreement": 99.5, "sqnr_db": 27.1, "seconds": 30.0,
        "host": {"top1": 85.5, "top5": 100.0, "agreement": 93.5, "sqnr_db": 14.0, "n": 200}}}
    (tmp_path / "results.json").write_text(json.dumps(d))
    r = run_cli("deploy.report", tmp_path / "results.json", timeout=300)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report.md").read_text()
    assert "## INT8 accuracy with the target's own kernels" in md
    assert f"| qemu:cortex-a72 [EMULATED] | {TAG}.u8s8.int8.onnx | 200 | 88.50 / 85.50 | " \
        "99.50 / 93.50 | 27.1 / 14.0 |" in md
    assert "on that core's own kernels agrees with FP32 on 99.5% of 200 images, 6.0 pt above " \
        "the same file on this host (93.5%)" in md
    assert "id='on-target'" in (tmp_path / "report.html").read_text()


def _slug(heading: str) -> str:
    """A Markdown heading's anchor as GitHub makes it: lower case, punctuation dropped,
    spaces to hyphens."""
    import re
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_report_decision_first(run):
    """The real run's headline names the configuration to ship on the local target (the
    rule over its own measured medians and top-1), says the failed QEMU target measured
    nothing, and links the table, which sits right under the headline, in both writers."""
    import re

    from deploy.analysis import MAX_INT8_DROP, SLOW_INT8

    _, run_dir = run
    d = _doc(run_dir)
    b, acc = d["models"][TAG]["bench"]["local"], d["models"][TAG]["accuracy"]["results"]
    int8 = b["onnx"]["median_ms"] / b[K8]["median_ms"] >= SLOW_INT8 and \
        acc["onnx"]["top1"] - acc[K8]["top1"] <= MAX_INT8_DROP
    want = f"ONNX Runtime INT8 {recipe_for_target('local').tag.upper()}" if int8 else \
        "ONNX Runtime FP32"
    md = (run_dir / "report.md").read_text()
    ship = next(ln for ln in md.splitlines() if ln.startswith("**Ship:**"))
    assert f"on local {want} (" in ship and "nothing measured on qemu:cortex-a72" in ship
    anchor = re.search(r"\]\(#([\w-]+)\)", ship).group(1)
    heads = {_slug(ln.lstrip("#")): i for i, ln in enumerate(md.splitlines()) if ln.startswith("#")}
    assert anchor in heads and heads[anchor] < heads[_slug("What the numbers say")]
    row = next(ln for ln in md.splitlines() if ln.startswith("| shufflenet_v1 1x g3 | local |"))
    assert row.split(" | ")[2] == want
    html = (run_dir / "report.html").read_text()
    head = html[html.index("id='headline'"):]
    link = re.search(r"<b>Ship:</b>[^<]*on local [^<]*<a href='#([\w-]+)'>", head).group(1)
    assert link == anchor and html.index(f"<h2 id='{anchor}'>") < html.index("What the numbers say")


def test_report_badges_a_partial_run(run, tmp_path):
    """A run with failed stages is `partial` while some model was measured (not `failed`):
    the real run (its QEMU bench failed), and the same run as 3 models of which one failed
    its export; `failed` when no model measured anything."""
    from deploy.report import render
    from deploy.verdict import run_badge

    _, run_dir = run
    d = _doc(run_dir)
    failed = sum(s["status"] == FAILED for s in d["stages"])     # the QEMU target's stages
    assert failed >= 1 and d["run"]["status"] == "failed"
    html = (run_dir / "report.html").read_text()
    assert f"<span class='badge partial'>partial (1 of 1 model measured, {failed} stage" in html
    m = d["models"][TAG]
    d["models"]["copy_a"] = json.loads(json.dumps(m))
    d["models"]["copy_b"] = {k: m[k] for k in ("spec", "name", "dataset", "variant")}
    d["stages"].append({"id": "copy_b/export_onnx", "kind": "export_onnx", "model": "copy_b",
                        "status": FAILED, "reason": "export.onnx: error: something broke"})
    (tmp_path / "results.json").write_text(json.dumps(d))
    md = render(tmp_path / "results.json").with_name("report.md").read_text()
    assert md.splitlines()[2] == \
        f"**Run:** partial (2 of 3 models measured, {failed + 1} stages failed)  "
    for mm in d["models"].values():
        mm.pop("bench", None)
    assert d["run"]["status"] == "failed" and run_badge(d) == "failed"


def test_ctrl_c_keeps_a_readable_partial_run(tmp_path):
    """SIGINT while export.onnx runs: exit 130, results.json says interrupted, the report
    of the partial run is written, and the stage's process group is gone."""
    results, d = interrupt_deploy(tmp_path / "runs")
    st = {s["kind"]: s for s in d["stages"]}
    assert st["cost"]["status"] == OK and st["weights"]["status"] == OK
    html = (results.parent / "report.html").read_text()
    assert "interrupted" in html and "<table" in html


# ---- the stage CLIs deploy runs, each in its own package -----------------------------------

def test_float_reference_rule():
    """One rule for every evaluation: INT8 vs its own format's float model, else ONNX;
    FP32 TFLite vs ONNX (converter agreement); ONNX vs nothing."""
    from export.card import ARTIFACT_KEYS, artifact_key
    from quant.evaluate import ref_keys

    assert [artifact_key(f"mobilenet_v1_w0.25.{s}") for s in (
        "onnx", "int8.onnx", "tflite", "int8.tflite", "mnn", "int8.mnn", "pte", "int8.pte")] == \
        list(ARTIFACT_KEYS)
    assert artifact_key("x.json") is None
    assert ref_keys("onnx_int8") == ("onnx",)
    assert ref_keys("mnn_int8") == ("mnn", "onnx") and ref_keys("mnn") == ("onnx",)
    assert ref_keys("tflite_int8") == ("tflite", "onnx")
    assert ref_keys("pte_int8") == ("pte", "onnx")
    assert ref_keys("tflite") == ("onnx",)
    assert ref_keys("onnx") == ()


def test_quant_evaluate_card_mode(run, tmp_path):
    _, run_dir = run
    card = run_dir / "artifacts" / f"{TAG}.json"
    r = run_cli("quant.evaluate", "--card", card, "--data", SHIPPED_TESTSET, "--limit", "20",
                "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["format"] == "armq-card-eval/1" and doc["n"] == 20
    res = doc["results"]
    # export.card.ordered_keys order: FP32, then one INT8 file per recipe the run's targets need
    int8s = sorted({int8_key("onnx", recipe_for_target(t).tag) for t in ("local", "qemu:cortex-a72")},
                   key=lambda k: (k != "onnx_int8", k))
    assert list(res) == ["onnx", *int8s] and K8 in int8s
    assert res["onnx"]["ref"] is None and res[K8]["ref"] == "onnx"
    # The first 20 of the 200 images test_results_schema bounds (measured: FP32 18/20,
    # INT8 agreement 20/20): at most 2 more misses, and 1 flipped decision.
    assert res["onnx"]["n"] == 20 and 80.0 <= res["onnx"]["top1"] <= 100.0
    assert res[K8]["agreement"] >= 95.0
    r = run_cli("quant.evaluate", "--card", card, "--data", SHIPPED_TESTSET, "--limit", "10",
                timeout=600)
    assert r.returncode == 0 and "top1 %" in r.stdout and f"({K8})" in r.stdout, r.stderr
    r = run_cli("quant.evaluate", "--card", card, "--ref", card, "--data", SHIPPED_TESTSET,
                timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("python -m quant.evaluate: error:") \
        and "--ref applies to --model only" in r.stderr
    r = run_cli("quant.evaluate", "--card", card, "--model", card, "--data", SHIPPED_TESTSET,
                timeout=120)
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_android_bench_profile_cli(run, tmp_path):
    _, run_dir = run
    art = run_dir / "artifacts"
    out = tmp_path / "prof.json"
    r = run_cli("android_bench.profile", "--model", art / f"{TAG}.onnx", art / f"{TAG}.json",
                "--runs", "2", "--warmup", "1", "--json", out, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["format"] == "armq-opprofile/1"
    prof = doc["models"][f"{TAG}.onnx"]
    assert prof["available"] and prof["runs"] == 2
    assert prof["categories"]["depthwise"]["nodes"] == 16
    assert doc["models"][f"{TAG}.json"]["available"] is False
    r = run_cli("android_bench.profile", "--model", tmp_path / "none.onnx", timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("python -m android_bench.profile: error:") \
        and "not found" in r.stderr


# ---- the report's headline and speed-up wording (synthetic results, no run) ---------------

def _bench(ms, instr=None, emulated=False):
    return {"file": "x", "median_ms": ms, "ci95_ms": [ms * 0.95, ms * 1.05],
            "instructions": instr, "emulated": emulated, "features": {}}


def _synthetic(tmp_path) -> Path:
    """One model on local and on QEMU cortex-a72 where the emulated ms ratio (2.36x) and the
    instruction ratio (0.93x) disagree, as ORT INT8 did; accuracy of both precisions."""
    tag = "shufflenet_v1_g3_w1_cifar10"
    doc = {"format": "armq-deploy/1", "run": {"id": "x", "status": "complete", "host": {"cpus": 2}},
           "config": {"targets": ["local", "qemu:cortex-a72"]},
           "targets": [{"id": "local", "kind": "local", "emulated": False},
                       {"id": "qemu:cortex-a72", "kind": "qemu", "cpu": "cortex-a72",
                        "emulated": True}],
           "models": {tag: {
               "name": "shufflenet_v1", "variant": {"model": "shufflenet_v1",
                                                    "params": {"groups": 3, "width": 1.0}},
               "cost": {"macs": 42.6e6},
               "bench": {"local": {"onnx": _bench(2.0), "onnx_int8": _bench(1.25)},
                         "qemu:cortex-a72": {"onnx": _bench(236.0, 9.3e7, True),
                                             "onnx_int8": _bench(100.0, 1.0e8, True)}},
               "accuracy": {"results": {"onnx": {"top1": 88.50}, "onnx_int8": {
                   "top1": 88.45, "agreement": 98.99, "ref": "onnx"}}}}},
           "stages": []}
    p = tmp_path / "results.json"
    p.write_text(json.dumps(doc))
    return p


def test_report_headline_decision_first(tmp_path):
    from deploy.explain import headline

    doc = json.loads(_synthetic(tmp_path).read_text())
    ship, what, much, acc = headline(doc)
    # 1.60x and 0.05 pt lost on local: INT8 ships; 0.93x the instructions on QEMU: FP32 does
    assert ship == ("Ship: on local ONNX Runtime INT8 S8S8 (1.60x the best FP32, -0.05 pt top-1); "
                    "on qemu:cortex-a72 ONNX Runtime FP32 (INT8 only 0.93x, instructions, "
                    "EMULATED)")
    assert what.startswith("What got faster: INT8 over FP32 of shufflenet_v1 1x g3 (ONNX Runtime)")
    assert "on local" in what and "qemu" not in what          # 0.93x on QEMU: not faster
    assert much.startswith("By how much: ") and "1.60x on local (latency)" in much
    assert "0.93x on qemu:cortex-a72 (instructions, EMULATED)" in much and "2.36" not in much
    assert acc == ("Accuracy cost: ONNX Runtime INT8 top-1 88.45% vs FP32 88.50% (-0.05 pt, "
                   "agrees with FP32 on 99.0% of images)")
    r = run_cli("deploy.report", tmp_path / "results.json", timeout=300)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report.md").read_text().splitlines()
    assert md[2] == "**Run:** complete  " and md[3].startswith("**Ship:**")
    assert md[4].startswith("**What got faster:**") and md[5].startswith("**By how much:**") \
        and md[6].startswith("**Accuracy cost:**")
    html = (tmp_path / "report.html").read_text()
    assert html.index("id='headline'") < html.index("What the numbers say")


def test_ship_choice_weighs_speed_and_accuracy(tmp_path):
    """INT8 ships where it is >= 1.1x the best FP32 and loses <= 1 pt top-1; else FP32."""
    from deploy.verdict import ship_choice

    doc = json.loads(_synthetic(tmp_path).read_text())
    by = {c["target"]: c for c in ship_choice(doc)}
    assert by["local"]["ship_key"] == "onnx_int8" and by["local"]["drop"] == pytest.approx(0.05)
    assert by["qemu:cortex-a72"]["ship_key"] == "onnx" and "under 1.1x" in \
        by["qemu:cortex-a72"]["why_ship"]
    acc = doc["models"][TAG]["accuracy"]["results"]
    acc["onnx_int8"]["top1"] = 86.0                     # 2.5 pt lost: FP32 ships on local too
    local = next(c for c in ship_choice(doc) if c["target"] == "local")
    assert local["ship_key"] == "onnx" and "2.50 pt top-1 lost (over 1)" in local["why_ship"]
    del doc["models"][TAG]["accuracy"]                  # no accuracy: speed decides, and says so
    local = next(c for c in ship_choice(doc) if c["target"] == "local")
    assert local["ship_key"] == "onnx_int8" and "accuracy not measured" in local["why_ship"]


def test_report_qemu_speedup_is_the_instruction_ratio(tmp_path):
    """On QEMU the measured speed-up is the instruction ratio; the emulated-ms ratio (2.36x)
    never sits beside it as a second speed-up. The MAC-ratio theory and INT8's bit-width 4x
    are named apart."""
    from deploy.analysis import int8_speedups
    from deploy.tables import int8_table

    doc = json.loads(_synthetic(tmp_path).read_text())
    q = next(s for s in int8_speedups(doc) if s["target"] == "qemu:cortex-a72")
    assert q["speedup"] == pytest.approx(0.93) and q["basis"] == "instructions"
    assert q["efficiency"] == pytest.approx(0.93 / 4) and q["latency_range"] is None
    head, body = int8_table(doc)
    row = next(r for r in body if r[2].startswith("qemu:cortex-a72"))
    assert "0.93x" in row and not any("2.36" in c for c in row) and "EMULATED" in row[4]
    assert "efficiency vs bit-width 4x" in head
    run_cli("deploy.report", tmp_path / "results.json", timeout=300)
    md = (tmp_path / "report.md").read_text()
    assert "2.36" not in md and "(emulated)" not in md
    i8 = md[md.index("## INT8 vs FP32"):md.index("## Stages")]
    assert "bit-width bound" in i8 and "not the MAC-ratio theory" in i8


def test_published_results_table(run):
    """--publish writes the zoo's one-row-per-model table from the same results.json."""
    _, run_dir = run
    md = (run_dir.parent.parent / "results.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| shufflenet_v1 1x g3 |")
               and "ep" in ln)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # FP32 on the whole test set is the shipped checkpoint's record; INT8 ORT measured here.
    d = _doc(run_dir)
    rec = d["models"]["shufflenet_v1_g3_w1_cifar10"]["weights"]["metrics"]["test_top1"]
    assert cells[2] == f"{100 * rec:.2f}"
    # the table's INT8 ORT file: the first recipe's (deploy.analysis.int8_key_for, no target)
    from deploy.analysis import int8_key_for
    m = d["models"]["shufflenet_v1_g3_w1_cifar10"]
    q = m["accuracy"]["results"][int8_key_for(m, "onnx")]
    # The accuracy stage records percentages; the drop is in points on the same images.
    assert cells[4] == f"{q['top1']:.2f}" and cells[6] == f"{q['agreement']:.2f}"
    f = d["models"]["shufflenet_v1_g3_w1_cifar10"]["accuracy"]["results"]["onnx"]["top1"]
    assert cells[5] == f"{f - q['top1']:+.2f}" and abs(f - q["top1"]) < 5
    assert "## Cost and speed" in md and "INT8 speed-up local" in md
    assert (run_dir.parent.parent / "results" / "accuracy_vs_macs.png").stat().st_size > 5000
    assert "**INT8 per family**" in md and "shufflenet_v1 1x g3 " in md.split("**INT8 per family**")[1]


def test_publish_errors_are_one_line(tmp_path):
    r = run_cli("deploy", "--publish", tmp_path / "x.txt", "--out", tmp_path / "runs")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == \
        f"python -m deploy: error: --publish {tmp_path / 'x.txt'}: expected a .md file"
    assert not (tmp_path / "runs").exists()


def test_stage_command_lines_come_from_their_packages(tmp_path):
    """deploy builds no command line itself: each stage package's `command()` makes one its
    own parser accepts (the export, PTQ and benchmark stages; accuracy/profile/compare too)."""
    import zoo
    from android_bench.cli import build_parser, command as bench_command
    from export import common
    from export.common import command as export_command
    from quant.ptq import command as ptq_command
    from zoo.cli import variant_argv

    v = zoo.resolve_variant("shiftnet", "cifar10", depth=56)
    for mod in ("export.onnx", "export.tflite"):
        argv = export_command(mod, variant_argv(v), tmp_path, None, python="py")
        assert argv[:3] == ["py", "-m", mod]
        args = common.parse(common.make_parser(mod, "x"), argv[3:])
        assert args.depth == 56 and args.random_weights and args.out == tmp_path
        argv = export_command(mod, variant_argv(v), tmp_path, tmp_path / "w.pt", python="py")
        assert common.parse(common.make_parser(mod, "x"), argv[3:]).weights == tmp_path / "w.pt"
    argv = ptq_command("m", tmp_path / "c", "tflite", 100, tmp_path, python="py")
    assert argv[:3] == ["py", "-m", "quant.ptq"] and argv[argv.index("--backend") + 1] == "tflite"
    argv = bench_command(["a.onnx", "b.tflite"], "qemu", 3, 1, tmp_path / "o.json", "cortex-a76")
    a = build_parser().parse_args(argv[3:])
    assert a.model == ["a.onnx", "b.tflite"] and a.runs == 3
    assert (a.target, a.cpu) == ("qemu:cortex-a76", None)     # the one target syntax
    for mod in ("plan.py", "target_stages.py"):
        plan_src = (REPO / "deploy" / mod).read_text()
        assert '"-m"' not in plan_src   # no hand-written `python -m` line left in the plan


def test_data_per_dataset(tmp_path):
    """--eval-data / --calib-data: one path for every model, or one per dataset (a run mixing
    CIFAR-10 and ImageNet models measures each on its own images)."""
    from deploy.spec import parse_data_arg

    assert parse_data_arg(None, "--eval-data") == {}
    assert parse_data_arg("val/", "--eval-data") == {None: Path("val/")}
    assert parse_data_arg("imagenet=a/,cifar10=b.tar", "--eval-data") == \
        {"imagenet": Path("a/"), "cifar10": Path("b.tar")}
    for bad, needle in (("imagenet=", "is not DATASET=PATH"),
                        ("imagenet=a,mnist=b", "is not DATASET=PATH"),
                        ("imagenet=a,imagenet=b", "imagenet given twice")):
        with pytest.raises(SpecError, match=needle):
            parse_data_arg(bad, "--eval-data")
    r = run_cli("deploy", "--models", "mobilenet_v2:dataset=imagenet", "--eval-data",
                   f"imagenet={tmp_path / 'nowhere'}", "--out", str(tmp_path / "runs"))
    assert r.returncode == 2 and r.stderr.strip().endswith("nowhere does not exist")
    assert not (tmp_path / "runs").exists()
