"""The Ray executor's promises in the default suite, small: one local Ray cluster for the
module, hand-made stage commands (no model). The same stage graph on the local runner and
on Ray gives equal results.json documents (deploy.rundiff) and byte-identical files; Ctrl-C
during a Ray stage stops that stage's process and marks the rest of the run. The real
sweeps (3 models, local vs Ray; deploy's Ctrl-C on Ray) are slow tests in
tests/test_deploy_scale.py."""
from __future__ import annotations

import _thread
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import process_alive

from deploy.rundiff import compare
from deploy.stages import FAILED, INTERRUPTED, OK, SKIPPED, Results, Runner, Stage

pytest.importorskip("ray")
PY = sys.executable


@pytest.fixture(scope="module")
def ray_executor():
    """A one-node local cluster; artifacts travel as bytes (what a multi-node cluster
    without a shared folder does), so the equality below covers the transfer too."""
    from deploy.executors import ArtifactMode
    from deploy.executors.ray import RayExecutor

    ex = RayExecutor(None, [], ArtifactMode.BYTES)
    try:
        yield ex
    finally:
        ex.close()


def _graph(run_dir: Path) -> list[Stage]:
    out = run_dir / "out"
    writer = "import sys; open(sys.argv[1], 'w').write('armq ' * 1000)"
    digest = ("import hashlib, json, sys; d = open(sys.argv[1], 'rb').read(); "
              "print(json.dumps({'sha256': hashlib.sha256(d).hexdigest(), 'n': len(d)}))")
    fail = "import sys; print('c: error: refused on purpose', file=sys.stderr); sys.exit(3)"
    return [
        Stage(id="m/a", kind="export_onnx", model="m", argv=[PY, "-c", writer, str(out / "m.txt")]),
        Stage(id="m/b", kind="quant_ort", model="m", needs=["m/a"],
              argv=[PY, "-c", digest, str(out / "m.txt")], stdout_file=out / "m.digest.json"),
        Stage(id="m/c", kind="accuracy", model="m", argv=[PY, "-c", fail]),
        Stage(id="m/d", kind="compare", model="m", needs=["m/c"], argv=[PY, "-c", "pass"]),
    ]


def _run(root: Path, executor=None) -> tuple[dict, Path]:
    run_dir = root / "run"
    (run_dir / "out").mkdir(parents=True)
    stages = _graph(run_dir)
    res = Results(run_dir / "results.json", {"format": "armq-deploy/1", "models": {}, "stages": []})
    if executor is not None:
        executor.bind(run_dir)
    runner = Runner(res, run_dir, stages, out=open(root / "progress.txt", "w"), executor=executor)
    runner.run_all([(stages[:1], False), (stages[1:], True)])
    return json.loads((run_dir / "results.json").read_text()), run_dir


def test_ray_runs_a_stage_graph_exactly_like_the_local_runner(ray_executor, tmp_path):
    local, l_dir = _run(tmp_path / "local")
    ray, r_dir = _run(tmp_path / "ray", ray_executor)
    c = compare(local, l_dir, ray, r_dir)
    assert c.agree and c.fields >= 4, c.differences
    by = {ex: {s["id"]: s for s in doc["stages"]} for ex, doc in (("local", local), ("ray", ray))}
    assert [by["ray"][i]["status"] for i in ("m/a", "m/b", "m/c", "m/d")] == [OK, OK, FAILED, SKIPPED]
    for sid in by["local"]:
        for f in ("status", "reason"):
            assert by["local"][sid][f] == by["ray"][sid][f], (sid, f)
    assert by["ray"]["m/c"]["reason"] == "c: error: refused on purpose"
    assert by["ray"]["m/c"]["outputs"]["exit_code"] == 3
    for rel in ("out/m.txt", "out/m.digest.json"):
        assert (r_dir / rel).read_bytes() == (l_dir / rel).read_bytes(), rel
    assert json.loads((r_dir / "out" / "m.digest.json").read_text())["n"] == 5000


def test_ctrl_c_on_ray_stops_the_stage_and_marks_the_run(ray_executor, tmp_path):
    run_dir = tmp_path / "run"
    pid_file = tmp_path / "pid"        # outside the run folder: read here while it runs
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    stages = [Stage(id="m/a", kind="export_onnx", model="m", argv=[PY, "-c", sleeper]),
              Stage(id="m/b", kind="quant_ort", model="m", needs=["m/a"], argv=[PY, "-c", "pass"])]
    res = Results(run_dir / "results.json", {"format": "armq-deploy/1", "models": {}, "stages": []})
    ray_executor.bind(run_dir)
    runner = Runner(res, run_dir, stages, out=open(tmp_path / "progress.txt", "w"),
                    executor=ray_executor)
    pid: list[int] = []

    def ctrl_c():
        for _ in range(600):
            if pid_file.is_file() and pid_file.read_text():
                pid.append(int(pid_file.read_text()))
                _thread.interrupt_main()      # what the terminal's SIGINT does to deploy
                return
            time.sleep(0.05)

    t = threading.Thread(target=ctrl_c, daemon=True)
    t0 = time.monotonic()
    t.start()
    runner.run_all([(stages, False)])
    t.join(timeout=5)
    assert pid, "the stage never started"
    assert runner.interrupted and time.monotonic() - t0 < 60
    d = json.loads((run_dir / "results.json").read_text())
    st = {s["id"]: s for s in d["stages"]}
    assert st["m/a"]["status"] == INTERRUPTED and "Ctrl-C" in st["m/a"]["reason"]
    assert st["m/b"]["status"] == SKIPPED and st["m/b"]["reason"] == "not run (Ctrl-C)"
    for _ in range(100):              # the stage's process got the SIGINT on its worker
        if not process_alive(pid[0]):
            break
        time.sleep(0.1)
    assert not process_alive(pid[0])

