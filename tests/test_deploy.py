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

from conftest import REPO, SHIPPED_CKPT, SHIPPED_TESTSET, run_cli

from deploy.spec import SpecError, load_sweep, parse_model_list, parse_model_spec, parse_target
from deploy.stages import FAILED, OK, SKIPPED, Results, Runner, Stage

TAG = "shufflenet_v1_g3_w1_cifar10"


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
    for bad in ("qemu:cortex-z9", "android", "ssh:board"):
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
    assert len(set(tags)) == len(tags) == 20 and d["baseline"] == "alexnet"
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
                "--runs", "5", "--warmup", "1", "--jobs", "1", "--out", out, timeout=900,
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
    for sid in ("cost", "weights", "export_onnx", "quant_ort", "accuracy", "bench/local", "opprofile"):
        assert st[f"{TAG}/{sid}"]["status"] == OK, st[f"{TAG}/{sid}"]
        assert st[f"{TAG}/{sid}"]["seconds"] is not None
    q = st[f"{TAG}/bench/qemu:cortex-a72"]
    assert q["status"] == FAILED and "ARMQ_QEMU" in q["reason"] and q["log"]
    m = d["models"][TAG]
    assert m["weights"]["kind"] == "shipped" and len(m["weights"]["sha256"]) == 64
    assert 30e6 < m["cost"]["macs"] < 60e6 and "dwconv" in m["cost"]["by_op"]
    assert set(m["artifacts"]) == {"onnx", "onnx_int8"}
    assert all(a["size_bytes"] > 0 for a in m["artifacts"].values())
    acc = m["accuracy"]["results"]
    assert acc["onnx"]["n"] == 200 and 10 <= acc["onnx"]["top1"] <= 100
    assert acc["onnx_int8"]["ref"] == "onnx" and acc["onnx_int8"]["agreement"] > 50
    b = m["bench"]["local"]
    assert b["onnx"]["median_ms"] > 0 and b["onnx_int8"]["median_ms"] > 0
    assert b["onnx"]["emulated"] is False and len(b["onnx"]["ci95_ms"]) == 2
    prof = m["profile"]["onnx"]
    assert prof["categories"]["depthwise"]["nodes"] == 16      # one per ShuffleNet unit
    assert prof["categories"]["conv"]["pct"] > 0
    assert (run_dir / "artifacts" / f"{TAG}.int8.onnx").is_file()


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


def test_ctrl_c_keeps_a_readable_partial_run(tmp_path):
    """SIGINT while export.onnx runs: exit 130, results.json says interrupted, the report
    of the partial run is written, and the stage's process group is gone."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "deploy", "--models", "shufflenet_v1:groups=3",
                             "--targets", "local", "--skip-tflite", "--limit-eval", "50",
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a suite started in the background (`make test &`) inherits an
                            # ignored SIGINT, and Python then never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 600
        results = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(out.glob("2*/results.json"))
            if found:
                results = found[0]
                try:
                    st = {s["kind"]: s["status"] for s in json.loads(results.read_text())["stages"]}
                except (json.JSONDecodeError, KeyError):
                    st = {}
                if st.get("export_onnx") == "running":
                    break
            time.sleep(0.2)
        assert results is not None and proc.poll() is None, "export_onnx never started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    d = json.loads(results.read_text())
    assert d["run"]["status"] == "interrupted"
    st = {s["kind"]: s for s in d["stages"]}
    assert st["cost"]["status"] == OK and st["weights"]["status"] == OK
    assert st["export_onnx"]["status"] == "interrupted"
    assert st["quant_ort"]["status"] == SKIPPED and "Ctrl-C" in st["quant_ort"]["reason"]
    html = (results.parent / "report.html").read_text()
    assert "interrupted" in html and "<table" in html
    # nothing of the stage is left running (a loaded machine may take a moment to reap it;
    # deploy SIGKILLs the group 10 s after the SIGINT)
    for _ in range(40):
        r = subprocess.run(["pgrep", "-f", f"export.onnx .*{results.parent.name}"],
                           capture_output=True)
        if r.returncode == 1:
            break
        time.sleep(0.5)
    assert r.returncode == 1, r.stdout
