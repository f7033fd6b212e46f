"""deploy scaled out: the executor seam, the device inventory, and the Ray executor.

Default suite: the inventory's validation, the install hint without Ray, and one real
local Ray cluster (2 CPUs) running a small stage graph in bytes-artifact mode, where a
worker is killed mid-stage. Slow: a 3-model ONNX sweep on the local runner and on Ray,
whose results.json must agree in every non-timing field.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, interrupt_deploy, process_alive, run_cli

from deploy.devices import DevicePool, Device, DeviceKind, load_devices
from deploy.rundiff import compare
from deploy.spec import SpecError
from deploy.stages import FAILED, OK, Results, Runner, Stage


# ---- the device inventory ------------------------------------------------------------------

def test_shipped_inventory_is_valid():
    devs = load_devices(REPO / "deploy" / "devices.toml")
    by = {d.name: d for d in devs}
    assert by["a76-1"].target == "qemu:cortex-a76" and by["a76-1"].resource == "device:a76-1"
    assert by["host"].kind is DeviceKind.LOCAL
    assert Device("pi5-1", DeviceKind.SSH, host="pi@b").bench_args() == ["--host", "pi@b"]


@pytest.mark.parametrize("body,needle", [
    ('[[device]]\nkind = "qemu"\n', "field 'name'"),
    ('[[device]]\nname = "x"\nkind = "phone"\n', "field 'kind'"),
    ('[[device]]\nname = "x"\nkind = "qemu"\ncpu = "cortex-z9"\n', "field 'cpu'"),
    ('[[device]]\nname = "x"\nkind = "ssh"\n', "field 'host'"),
    ('[[device]]\nname = "x"\nkind = "ssh"\nhost = "a; rm -rf /"\n', "field 'host'"),
    ('[[device]]\nname = "x"\nkind = "qemu"\nout = "/tmp"\n', "field 'out'"),
    ('[[device]]\nname = "../x"\nkind = "local"\n', "field 'name'"),
    ('[[device]]\nname = "x"\nkind = "local"\n[[device]]\nname = "x"\nkind = "local"\n', "twice"),
    ('devices = 1\n', "unknown key 'devices'"),
    ('[[device]\n', "not valid TOML"),
])
def test_inventory_errors_name_the_field(tmp_path, body, needle):
    f = tmp_path / "devices.toml"
    f.write_text(body)
    with pytest.raises(SpecError, match=needle):
        load_devices(f)


def test_inventory_cli_errors_are_one_line(tmp_path):
    f = tmp_path / "devices.toml"
    f.write_text('[[device]]\nname = "a72"\nkind = "qemu"\ncpu = "cortex-a72"\n')
    r = run_cli("deploy", "--targets", "local,qemu:cortex-a76", "--devices", f,
                "--out", tmp_path / "runs", timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "no device serves target 'qemu:cortex-a76'" in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "nothing answers there"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
])
def test_ray_usage_errors(tmp_path, extra, needle):
    """In process (the one-line rendering is cli_entry's, checked above): before any run folder."""
    from deploy.cli import main
    from zoo.util import ArmqError

    if "--executor" in extra:
        pytest.importorskip("ray")
    with pytest.raises(ArmqError, match=needle):
        main([*extra, "--out", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


def test_device_pool_never_shares_a_device():
    pool = DevicePool([Device("q1", DeviceKind.QEMU, cpu="cortex-a76"),
                       Device("q2", DeviceKind.QEMU, cpu="cortex-a76")])
    a = pool.acquire("qemu:cortex-a76", lambda: False)
    b = pool.acquire("qemu:cortex-a76", lambda: False)
    assert {a.name, b.name} == {"q1", "q2"}
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert pool.acquire("qemu:cortex-a76", stop.is_set) is None     # both busy until stop
    pool.release(a)
    assert pool.acquire("qemu:cortex-a76", lambda: False) == a


def test_ray_missing_says_how_to_install(tmp_path, monkeypatch):
    from deploy.cli import main
    from zoo.util import ArmqError

    monkeypatch.setitem(sys.modules, "ray", None)      # as if not installed
    with pytest.raises(ArmqError, match=r"pip install 'armq\[ray\]'"):
        main(["--executor", "ray", "--out", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


# ---- a real local Ray cluster ----------------------------------------------------------------

def test_ray_stage_graph_bytes_mode_and_a_killed_worker(tmp_path):
    """Artifacts as bytes (forced: one node would share the folder), device resources, and
    SIGKILL of the worker running a stage: that stage fails, its process dies with the
    worker, every other stage finishes."""
    pytest.importorskip("ray")
    from deploy.executors import ArtifactMode
    from deploy.executors.ray import RayExecutor

    py = sys.executable
    run_dir = tmp_path / "run"
    (run_dir / "out").mkdir(parents=True)
    pids = tmp_path / "pids.txt"       # outside the run folder: the test reads it live
    # stage a: records its worker's pid and its own, then waits to be killed
    victim = (f"import os, time; open({str(pids)!r}, 'w').write(f'{{os.getppid()}} {{os.getpid()}}');"
              " time.sleep(120)")
    # b writes a file under the run folder (reports the path it really wrote to);
    # c reads it (an input named in its argv) and writes its own
    b_out, c_out = run_dir / "out" / "b.txt", run_dir / "out" / "c.txt"
    writer = "import sys; open(sys.argv[1], 'w').write(sys.argv[1])"
    reader = "import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read() + '!')"
    # two benchmarks on one inventory device: they take turns
    stamp = "import sys, time; t = time.time(); time.sleep(1); " \
        "open(sys.argv[1], 'w').write(f'{t} {time.time()}')"
    stages = [
        Stage(id="a", kind="export_onnx", argv=[py, "-c", victim], timeout_s=300),
        Stage(id="b", kind="export_onnx", argv=[py, "-c", writer, str(b_out)]),
        Stage(id="c", kind="quant_ort", needs=["b"], argv=[py, "-c", reader, str(b_out), str(c_out)]),
        Stage(id="d", kind="bench", target="qemu:cortex-a76", model="m1",
              argv=[py, "-c", stamp, str(run_dir / "out" / "d.txt")]),
        Stage(id="e", kind="bench", target="qemu:cortex-a76", model="m2",
              argv=[py, "-c", stamp, str(run_dir / "out" / "e.txt")]),
    ]
    pool = DevicePool([Device("q1", DeviceKind.QEMU, cpu="cortex-a76")])
    ex = RayExecutor(None, ["device:q1"], ArtifactMode.BYTES)
    try:
        ex.bind(run_dir)
        assert ex.describe()["artifacts"] == "bytes"
        res = Results(run_dir / "results.json", {"format": "armq-deploy/1", "models": {},
                                                 "stages": []})
        runner = Runner(res, run_dir, stages, jobs=2, out=open(tmp_path / "progress.txt", "w"),
                        executor=ex, devices=pool)
        killed: list[int] = []

        def killer():
            for _ in range(600):
                if pids.is_file() and len(pids.read_text().split()) == 2:
                    worker, child = map(int, pids.read_text().split())
                    os.kill(worker, signal.SIGKILL)
                    killed.extend([worker, child])
                    return
                time.sleep(0.1)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        runner.run_all([(stages[:2], True), (stages[2:3], False), (stages[3:], True)])
        t.join(timeout=5)
    finally:
        ex.close()
    by = {s["id"]: s for s in json.loads((run_dir / "results.json").read_text())["stages"]}
    assert killed, "stage a never started"
    assert by["a"]["status"] == FAILED and "worker lost" in by["a"]["reason"], by["a"]
    assert by["b"]["status"] == OK and by["c"]["status"] == OK, (by["b"]["reason"], by["c"]["reason"])
    # b ran in a scratch folder of its worker; its output came back into the run folder
    assert b_out.is_file() and b_out.read_text() != str(b_out)
    assert c_out.read_text() == b_out.read_text() + "!"
    assert (run_dir / by["b"]["log"]).is_file()
    # the device ran one benchmark at a time, both recorded where they ran
    (d0, d1), (e0, e1) = [map(float, (run_dir / "out" / f"{x}.txt").read_text().split())
                          for x in "de"]
    assert d1 <= e0 or e1 <= d0
    assert by["d"]["outputs"]["device"] == "q1" and by["d"]["node"]
    # the killed worker's stage process did not outlive it (PR_SET_PDEATHSIG)
    for _ in range(50):
        if not process_alive(killed[1]):
            break
        time.sleep(0.1)
    assert not process_alive(killed[1])



# ---- the same sweep on both executors ------------------------------------------------------

SWEEP = ["--models", "shufflenet_v1:groups=3,shufflenet_v1:groups=3:width=0.5,"
         "shufflenet_v1:groups=1", "--dataset", "cifar10", "--targets", "local,qemu:cortex-a76",
         "--skip-tflite", "--limit-eval", "100", "--target-eval", "20", "--runs", "2",
         "--warmup", "1", "--num-calib", "8", "--no-report"]


@pytest.mark.slow
def test_ray_sweep_equals_the_local_runner(tmp_path):
    pytest.importorskip("ray")
    docs, dirs = {}, {}
    for ex in ("local", "ray"):
        out = tmp_path / ex
        r = run_cli("deploy", *SWEEP, "--executor", ex, "--out", out, timeout=1500)
        assert r.returncode == 0, r.stderr[-3000:]
        (res,) = out.glob("2*/results.json")
        docs[ex], dirs[ex] = json.loads(res.read_text()), res.parent
    assert docs["ray"]["run"]["executor"]["executor"] == "ray"
    assert {s["status"] for s in docs["local"]["stages"]} == {OK}
    # every non-timing field equal; QEMU instruction counts within the variation each run
    # measured between its own inferences (here the medians differed by tens of
    # instructions in 10^7, the variation ~10^3)
    c = compare(docs["local"], dirs["local"], docs["ray"], dirs["ray"])
    assert c.agree, c.differences
    assert c.counts == 3 * 2           # 3 models x (FP32, INT8) on qemu:cortex-a76
    for tag, m in docs["ray"]["models"].items():
        assert m["measured_on"]["qemu:cortex-a76"]["node"]


@pytest.mark.slow
def test_ray_ctrl_c_keeps_a_readable_partial_run(tmp_path):
    """The local runner's Ctrl-C promise on Ray: exit 130, results.json says interrupted,
    the running stage is stopped on its worker (its process is gone)."""
    pytest.importorskip("ray")
    interrupt_deploy(tmp_path / "runs", "--executor", "ray", "--no-report")


@pytest.mark.slow
def test_existing_cluster_with_a_device_resource(tmp_path):
    """`ray start --head` on loopback with a device resource; deploy joins it with
    --ray-address and --devices, and the benchmark runs on that device."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats", '--resources={"device:a76-t": 1}'],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        inv = tmp_path / "devices.toml"
        inv.write_text('[[device]]\nname = "a76-t"\nkind = "qemu"\ncpu = "cortex-a76"\n')
        out = tmp_path / "runs"
        r = run_cli("deploy", "--models", "shufflenet_v1:groups=3:width=0.5", "--dataset", "cifar10",
                    "--targets", "qemu:cortex-a76", "--skip-tflite", "--limit-eval", "50",
                    "--target-eval", "20", "--runs", "1", "--warmup", "1", "--num-calib", "8", "--no-report", "--executor", "ray",
                    "--ray-address", f"127.0.0.1:{port}", "--devices", inv, "--out", out,
                    timeout=900, env={"RAY_AUTH_MODE": "token"})
    finally:
        head.terminate()            # --block: SIGTERM stops the cluster it started
        head.wait(timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    (res,) = out.glob("2*/results.json")
    d = json.loads(res.read_text())
    assert d["run"]["executor"]["artifacts"] == "shared" and d["run"]["devices"] == ["a76-t"]
    (m,) = d["models"].values()
    assert m["measured_on"]["qemu:cortex-a76"]["device"] == "a76-t"
    assert m["bench"]["qemu:cortex-a76"]["onnx"]["instructions"] > 0
