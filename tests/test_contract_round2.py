"""Hardening, round 2: the contract on hostile or broken inputs, by class.

  3. bounded resources on untrusted data (archive members, pixels, knobs, JSON);
  4. a kill is not a crash (SIGTERM/SIGHUP handled like Ctrl-C, exit 128+signum);
  5. consistency under faults (truncated cache, racing run folders, disk full);
  6. "internal error" on a user input is a defect (compare/report/audit/evaluate);
  7. what a terminal shows is escaped (file and card names with control characters).

Every CLI case checks the same one-line contract as tests/test_cli_contract.py: non-zero
exit, the last stderr line is `<prog>: error: ...` naming the problem, no traceback.
"""
from __future__ import annotations

import errno
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_cli, wait_for_running_stage

from zoo.config import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from zoo.util import ArmqError, cli_entry, load_json, prog_of, shown

CIFAR = list(CIFAR10_CLASSES)
SIZE = 8


# ---- builders (torch-free) -------------------------------------------------------------------

def png(size: tuple[int, int] = (10, 10), seed: int = 0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def png_declaring(w: int, h: int) -> bytes:
    """A tiny PNG whose IHDR claims w x h (a decompression bomb by its header)."""
    data = bytearray(png((1, 1)))
    ihdr = 8 + 8                       # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = crc.to_bytes(4, "big")
    return bytes(data)


def tiny_onnx(path: Path, classes: int = 10) -> Path:
    """Conv(3->4) + Relu + GlobalAveragePool + Flatten + Gemm(4->classes), NCHW 1x3x8x8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_card(folder: Path, name: str = "tiny", classes: list[str] | None = None) -> Path:
    classes = classes or CIFAR
    card = {
        "format": "armq-card/1", "name": name,
        "variant": {"model": name, "dataset": "cifar10", "input_size": SIZE,
                    "num_classes": len(classes), "params": {}},
        "input": {"name": "input", "shape": [1, 3, SIZE, SIZE], "layout": "NCHW", "dtype": "float32"},
        "output": {"name": "logits", "shape": [1, len(classes)]},
        "preprocessing": {"dataset": "cifar10", "input_size": SIZE, "num_classes": len(classes),
                          "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD), "resize": SIZE,
                          "interpolation": "bilinear", "layout": "NCHW"},
        "class_names": classes, "cost": {}, "source": {"weights": "hand-made"},
        "artifacts": {"onnx": {"path": f"{name}.onnx"}}, "accuracy": {},
    }
    p = folder / f"{name}.json"
    folder.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(card))
    return p


def labelled_folder(root: Path, classes=("cat", "dog"), per_class: int = 2) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / c / f"{i}.png").write_bytes(png(seed=hash(c) % 100 + i))
    return root


def assert_one_line_error(r: subprocess.CompletedProcess, prog: str, needle: str) -> None:
    err = r.stderr
    assert r.returncode not in (0, 1), (r.returncode, err[-2000:])   # 1 = internal error
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no error line"
    last = lines[-1]
    assert last.startswith(f"{prog_of(prog)}: error: "), err[-2000:]   # python -m <module>
    assert "internal error" not in last, last
    assert needle in last, last
    assert "\x1b" not in err


class _Zeros(io.RawIOBase):
    """n zero bytes, streamed (so a 1.5 GiB member never exists in memory here either)."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


# ---- 3. bounded resources ----------------------------------------------------------------------

HUGE = int(1.5 * 2**30)


@pytest.fixture(scope="module")
def hostile_targz(tmp_path_factory) -> Path:
    """cat/huge.png: 1.5 GiB of zeros (compresses to ~1.5 MB) + dog/0.png, a good image."""
    p = tmp_path_factory.mktemp("hostile") / "hostile.tar.gz"
    with gzip.open(p, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as t:
        info = tarfile.TarInfo("cat/huge.png")
        info.size = HUGE
        t.addfile(info, io.BufferedReader(_Zeros(HUGE), buffer_size=1 << 20))
        good = png()
        info = tarfile.TarInfo("dog/0.png")
        info.size = len(good)
        t.addfile(info, io.BytesIO(good))
    assert p.stat().st_size < 20 * 2**20
    return p


def test_hostile_targz_member_refused_by_declared_size_memory_bounded(tmp_path, hostile_targz):
    """quant.evaluate on a .tar.gz whose member declares 1.5 GiB: the member is skipped by
    its header size (one warning), the good image is scored, peak RSS stays < 1 GB."""
    tiny_onnx(tmp_path / "tiny.onnx")
    tiny_card(tmp_path)
    wrapper = ("import resource, subprocess, sys; "
               "r = subprocess.run([sys.executable, '-m', 'quant.evaluate', '--model', sys.argv[1], "
               "'--data', sys.argv[2], '--json'], capture_output=True, text=True); "
               "sys.stderr.write(r.stderr); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", wrapper, str(tmp_path / "tiny.onnx"),
                        str(hostile_targz)], cwd=REPO, capture_output=True, text=True, timeout=600)
    rc, maxrss_kb = map(int, r.stdout.split())
    assert rc == 0, r.stderr[-2000:]
    assert "huge.png" in r.stderr and "too large" in r.stderr and "ARMQ_MAX_MEMBER_MB" in r.stderr
    assert maxrss_kb < 1024 * 1024, f"peak RSS {maxrss_kb / 1024:.0f} MB"


def test_hostile_member_is_never_read(hostile_targz, monkeypatch):
    """In process: the huge member's reader refuses before extractfile() is touched."""
    from zoo import data

    recs = {r.name: r for r in data.list_images(hostile_targz)}
    monkeypatch.setattr(tarfile.TarFile, "extractfile",
                        lambda *a, **k: pytest.fail("read a member over the cap"))
    with pytest.raises(data.MemberTooLarge, match="over the 64 MB limit"):
        recs["cat/huge.png"].read()


def _write_source(kind: str, root: Path, members: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        for name, b in members.items():
            (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "src" / name).write_bytes(b)
        return root / "src"
    if kind == "zip":
        p = root / "src.zip"
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            for name, b in members.items():
                z.writestr(name, b)
        return p
    p = root / "src.tar.gz"
    with tarfile.open(p, "w:gz") as t:
        for name, b in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(b)
            t.addfile(info, io.BytesIO(b))
    return p


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_member_cap_every_source_kind(kind, tmp_path, monkeypatch):
    """ARMQ_MAX_MEMBER_MB applies to folders, zips and tars alike: over it, skipped with a
    warning naming the limit; nothing usable left is one DataError."""
    from zoo.data import DataError, load_images

    monkeypatch.setenv("ARMQ_MAX_MEMBER_MB", "1")
    big = png() + bytes(2 * 2**20)          # a PNG with 2 MB of trailing junk
    src = _write_source(kind, tmp_path, {"cat/big.png": big, "dog/ok.png": png()})
    with pytest.warns(UserWarning, match=r"skipping cat/big.png: too large .*ARMQ_MAX_MEMBER_MB"):
        got = load_images(src, SIZE, SIZE)
    assert got.names == ("dog/ok.png",) and got.skipped == ("cat/big.png",)
    src2 = _write_source(kind, tmp_path / "only", {"cat/big.png": big})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of the 1 image files"):
            load_images(src2, SIZE, SIZE)


def test_bounded_read_does_not_trust_the_header():
    """A header that under-declares the size cannot make the read exceed the cap."""
    from zoo.data import MemberTooLarge, _bounded

    with pytest.raises(MemberTooLarge):
        _bounded(10, 1000, lambda: io.BytesIO(bytes(5000)))
    assert _bounded(10, 1000, lambda: io.BytesIO(b"x" * 10)) == b"x" * 10


@pytest.mark.parametrize("w,h,env", [(60000, 60000, None), (30000, 30000, None),
                                     (100, 100, "5000")], ids=["3.6Gpx", "900Mpx", "env-cap"])
def test_pixel_cap_by_header(w, h, env, tmp_path, monkeypatch):
    """Decompression bombs: refused from the header's size, before decoding."""
    from zoo.data import load_images

    if env:
        monkeypatch.setenv("ARMQ_MAX_PIXELS", env)
    data = png_declaring(w, h) if env is None else png((w, h))
    src = _write_source("folder", tmp_path, {"cat/bomb.png": data, "dog/ok.png": png()})
    with pytest.warns(UserWarning, match=r"skipping cat/bomb.png: .*(Mpx|pixels|bomb)"):
        got = load_images(src, SIZE, SIZE)
    assert got.skipped == ("cat/bomb.png",)


@pytest.mark.parametrize("var,val", [("ARMQ_MAX_MEMBER_MB", "lots"), ("ARMQ_MAX_MEMBER_MB", "-1"),
                                     ("ARMQ_MAX_PIXELS", "inf"), ("ARMQ_MAX_JSON_MB", "nan")])
def test_bad_cap_env_is_one_line(var, val, tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx")
    tiny_card(tmp_path)
    labelled_folder(tmp_path / "data")
    r = run_cli("quant.evaluate", "--model", tmp_path / "tiny.onnx", "--data", tmp_path / "data",
                env={var: val})
    assert_one_line_error(r, "quant.evaluate", var)


@pytest.mark.parametrize("args,needle", [
    (["--input-size", "60000"], "--input-size 60000 is too large"),
    (["--input-size", "4097"], "--input-size 4097 is too large"),
    (["--num-classes", "1000000000"], "--num-classes 1000000000 is too large"),
], ids=["input-60000", "input-4097", "classes-1e9"])
def test_cost_knob_upper_bounds(args, needle):
    r = run_cli("zoo.cost", "--model", "shufflenet_v1", *args)
    assert_one_line_error(r, "zoo.cost", needle)


def test_input_size_bound_in_resolve_variant():
    from zoo._registry import MAX_INPUT_SIZE, ZooError, resolve_variant

    assert resolve_variant("shufflenet_v1", input_size=MAX_INPUT_SIZE).input_size == MAX_INPUT_SIZE
    with pytest.raises(ZooError, match="too large"):
        resolve_variant("shufflenet_v1", input_size=MAX_INPUT_SIZE + 1)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("text,env,needle", [
    (_deep(100_000), {}, "nested too deeply"),
    (_deep(65), {}, "nested too deeply"),
    ('{"a": ' * 70 + "1" + "}" * 70, {}, "nested too deeply"),
    ("[1]" + " " * 4000, {"ARMQ_MAX_JSON_MB": "0.001"}, "too large"),
    ("{", {}, "not valid JSON"),
    ("", {}, "not valid JSON"),
    ("\xff\xfe", {}, "not valid JSON"),
], ids=["deep-100k", "deep-65", "deep-obj-70", "too-big", "truncated", "empty", "not-utf8"])
def test_load_json_bounds(text, env, needle, tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    p = tmp_path / "x.json"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(ArmqError, match=needle) as ei:
        load_json(p, "results file")
    assert "\n" not in str(ei.value) and "results file" in str(ei.value)


def test_load_json_accepts_the_limit(tmp_path):
    p = tmp_path / "ok.json"
    p.write_text(_deep(64))
    assert load_json(p, "x") == [] or isinstance(load_json(p, "x"), list)


def test_load_json_missing_and_folder(tmp_path):
    with pytest.raises(ArmqError, match="not found"):
        load_json(tmp_path / "nope.json", "model card")
    with pytest.raises(ArmqError, match="is a folder"):
        load_json(tmp_path, "model card")


def test_model_card_loader_bounded(tmp_path):
    from export.card import CardError, load_card

    p = tmp_path / "m.json"
    p.write_text(_deep(100_000))
    with pytest.raises(CardError, match="model card .* nested too deeply"):
        load_card(p)


# ---- 4. a kill is not a crash ------------------------------------------------------------------

def _pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (via /proc: no psutil)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (d / "status").read_text().splitlines()
                          if ln.startswith("State:")), "")
        except OSError:
            continue
        if text in cmd and "zombie" not in state:
            out.append(int(d.name))
    return out


def test_sigterm_deploy_stops_children_and_marks_interrupted(tmp_path):
    """SIGTERM (CI cancel, `timeout`, `docker stop`) mid-run: exit 143, results.json and
    the run say interrupted, what finished is kept, and no stage process is left."""
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "deploy", "--models", "shufflenet_v1:groups=3",
                             "--targets", "local", "--skip-tflite", "--runs", "3",
                             "--limit-eval", "50", "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        results = wait_for_running_stage(proc, out, "export_onnx")
        time.sleep(1.0)
        children = _pids_mentioning(results.parent.name)
        assert children, "no stage process seen"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    d = json.loads(results.read_text())
    assert d["run"]["status"] == "interrupted" and d["run"]["finished"]
    st = {s["kind"]: s for s in d["stages"]}
    assert st["cost"]["status"] == "ok" and st["weights"]["status"] == "ok"
    assert st["export_onnx"]["status"] == "interrupted"
    assert not any(s["status"] in ("running", "pending") for s in d["stages"])
    for _ in range(40):
        left = [p for p in children if _alive(p)] + _pids_mentioning(results.parent.name)
        if not left:
            break
        time.sleep(0.5)
    assert not left, left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "zombie" not in next(ln for ln in Path(f"/proc/{pid}/status").read_text()
                                    .splitlines() if ln.startswith("State:"))
    except (OSError, StopIteration):
        return False


def test_sigterm_export_onnx_removes_its_temp_dir(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "export.onnx", "--model", "shufflenet_v1",
                             "--groups", "3", "--dataset", "cifar10", "--out", str(tmp_path / "out")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmpdir)})
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if list(tmpdir.glob("armq-onnx-*")):
                break
            time.sleep(0.05)
        assert proc.poll() is None and list(tmpdir.glob("armq-onnx-*")), "no temp dir seen"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert "export.onnx: interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert not list(tmpdir.glob("armq-onnx-*"))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.onnx"))


def _run_entry(main, argv=()) -> tuple[int, str]:
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as ei:
        cli_entry(main, "prog", list(argv))
    return ei.value.code, err.getvalue()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_cli_entry_signal_runs_cleanup_and_exits_128_plus(sig):
    cleaned = []
    old = signal.getsignal(sig)

    def main(argv):
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)
            pytest.fail("signal did not interrupt")
        finally:
            cleaned.append(True)

    # A test run under nohup inherits SIGHUP ignored, which cli_entry rightly respects:
    # start from the default disposition, the one a terminal or CI gives.
    signal.signal(sig, signal.SIG_DFL)
    try:
        rc, err = _run_entry(main)
    finally:
        signal.signal(sig, old)
    assert rc == 128 + sig and cleaned == [True]
    assert err.strip() == f"python -m prog: interrupted ({signal.Signals(sig).name})"


def test_second_signal_does_not_abort_cleanup():
    done = []
    old = signal.getsignal(signal.SIGTERM)

    def main(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGTERM)      # e.g. `timeout` sending it again
            time.sleep(0.05)
            done.append("cleanup finished")
            return 130                                 # deploy: caught, kept what finished

    try:
        rc, _ = _run_entry(main)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert rc == 143 and done == ["cleanup finished"]


# ---- 5. consistency under faults ---------------------------------------------------------------

def test_truncated_decoded_cache_is_rebuilt(tmp_path, monkeypatch, capfd):
    from zoo import train

    monkeypatch.setattr(train, "CACHE", tmp_path / "cache")
    src = labelled_folder(tmp_path / "data")
    first = train.cached_images(src, SIZE, SIZE, ("cat", "dog"))
    (npz,) = (tmp_path / "cache" / "decoded").glob("*.npz")
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    capfd.readouterr()
    again = train.cached_images(src, SIZE, SIZE, ("cat", "dog"))
    err = capfd.readouterr().err
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    warn = [ln for ln in err.splitlines() if "cache" in ln]
    assert len(warn) == 1 and "rebuilding" in warn[0] and "BadZipFile" in warn[0]
    third = train.cached_images(src, SIZE, SIZE, ("cat", "dog"))   # rebuilt: read silently
    assert np.array_equal(first.images, third.images)
    assert "cache" not in capfd.readouterr().err


def test_run_folders_created_atomically_under_a_race(tmp_path, monkeypatch):
    """Six runs started in the same second each get their own folder (no FileExistsError)."""
    import datetime as real_dt

    from deploy import cli

    class _Fixed:
        class datetime:
            @staticmethod
            def now():
                return real_dt.datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(cli, "_dt", _Fixed)
    barrier = threading.Barrier(6)
    got, errors = [], []

    def one():
        barrier.wait()
        try:
            got.append(cli.new_run_dir(tmp_path))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(got)) == 6
    assert {d.name for d in got} == {"20260102-030405"} | {f"20260102-030405-{i}" for i in range(2, 7)}


def test_disk_full_is_one_line():
    def main(argv):
        with open("/dev/full", "w") as f:        # ENOSPC on flush, as a full disk gives
            f.write("x" * 10)
    rc, err = _run_entry(main)
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("python -m prog: error: disk full while writing") and "internal" not in err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_names_the_file(code):
    def main(argv):
        raise OSError(code, os.strerror(code), "/out/model.int8.onnx")
    rc, err = _run_entry(main)
    assert rc == 2 and "disk full while writing /out/model.int8.onnx" in err


def test_atomic_paths_all_or_nothing(tmp_path):
    """The transaction quant.ptq needs (INT8 file + card): a disk-full while writing the
    second leaves both targets as they were and no temp file."""
    from zoo.util import atomic_paths

    model, card = tmp_path / "m.int8.onnx", tmp_path / "m.json"
    model.write_bytes(b"old model")
    card.write_text("old card")
    with pytest.raises(OSError, match="No space"):
        with atomic_paths(model, card) as (tm, tc):
            tm.write_bytes(b"new model")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # while writing the card
    assert model.read_bytes() == b"old model" and card.read_text() == "old card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.json"]
    with atomic_paths(model, card) as (tm, tc):
        tm.write_bytes(b"new model")
        tc.write_text("new card")
    assert model.read_bytes() == b"new model" and card.read_text() == "new card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.json"]


# ---- 6. no internal error on user input --------------------------------------------------------

GOOD_RESULT = {"model": {"file": "m.onnx", "card_name": "m"}, "timing_ms": {"median": 2.0},
               "target": {"kind": "local"}, "runtime": {"name": "onnxruntime"}}


@pytest.mark.parametrize("doc,needle", [
    ({**GOOD_RESULT, "model": "m.onnx"}, "'model' is a str"),
    ({**GOOD_RESULT, "model": ["m"]}, "'model' is a list"),
    ({**GOOD_RESULT, "timing_ms": 3}, "'timing_ms' is a int"),
    ({**GOOD_RESULT, "timing_ms": {"median": "fast"}}, "timing_ms.median is not a number"),
    ({**GOOD_RESULT, "target": "local"}, "'target' is a str"),
    ({**GOOD_RESULT, "runtime": [1]}, "'runtime' is a list"),
    ([1, 2], "not an android_bench result"),
    ({"results": ["x"]}, "not an android_bench result"),
    (None, "not an android_bench result"),
], ids=["model-str", "model-list", "timing-int", "median-str", "target-str", "runtime-list",
        "list-of-ints", "results-of-str", "null"])
def test_compare_bad_shapes(doc, needle, tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    r = run_cli("android_bench.compare", p)
    assert_one_line_error(r, "android_bench.compare", needle)


def test_compare_model_nested_100k_deep(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"model": ' + _deep(100_000) + ', "timing_ms": {"median": 1}}')
    r = run_cli("android_bench.compare", p)
    assert_one_line_error(r, "android_bench.compare", "nested too deeply")


def _results_doc() -> dict:
    return {"format": "armq-deploy/1",
            "run": {"id": "r", "status": "complete", "started": "2026-01-01T00:00:00",
                    "finished": "2026-01-01T00:01:00", "command": ["python -m deploy"], "host": {}},
            "config": {}, "baseline": None, "targets": [{"id": "local", "kind": "local"}],
            "models": {}, "stages": [], "notes": []}


@pytest.mark.parametrize("patch,needle", [
    ({"stages": [5]}, "stages[0] is a int"),
    ({"stages": ["cost"]}, "stages[0] is a str"),
    ({"stages": [{"id": "x", "status": 3}]}, "stages[0].status is a int"),
    ({"stages": {"a": 1}}, "'stages' is a dict"),
    ({"models": {"m": "shufflenet"}}, "models['m'] is a str"),
    ({"targets": "local"}, "'targets' is a str"),
    ({"run": [1]}, "'run' is a list"),
    ({"format": "other/1"}, "not a deploy results file"),
], ids=["stage-int", "stage-str", "status-int", "stages-dict", "model-str", "targets-str",
        "run-list", "format"])
def test_report_bad_shapes(patch, needle, tmp_path):
    p = tmp_path / "results.json"
    p.write_text(json.dumps({**_results_doc(), **patch}))
    r = run_cli("deploy.report", p)
    assert_one_line_error(r, "deploy.report", needle)
    assert not (tmp_path / "report.html").exists()


def test_report_nested_deep(tmp_path):
    p = tmp_path / "results.json"
    p.write_text('{"format": "armq-deploy/1", "stages": ' + _deep(100_000) + "}")
    assert_one_line_error(run_cli("deploy.report", p), "deploy.report", "nested too deeply")


def test_report_small_fuzz_never_internal(tmp_path):
    """Wrong types anywhere in a (minimal) results.json: a report or one line, never a crash."""
    from deploy.report import render

    rng = np.random.default_rng(0)
    bad = ["x", 5, None, [], {}, [1], {"a": 1}, True, -1.5]
    keys = [("run",), ("run", "command"), ("run", "host"), ("config",), ("targets", 0),
            ("targets", 0, "id"), ("notes",), ("baseline",), ("run", "status")]
    for i in range(30):
        d = _results_doc()
        path = keys[int(rng.integers(len(keys)))]
        o = d
        for k in path[:-1]:
            o = o[k]
        o[path[-1]] = bad[int(rng.integers(len(bad)))]
        f = tmp_path / f"{i}" / "results.json"
        f.parent.mkdir()
        f.write_text(json.dumps(d))
        try:
            render(f)
        except ArmqError as e:
            assert "\n" not in str(e)


@pytest.mark.parametrize("content,needle", [
    (b"", "is empty (0 bytes)"),
    (b"\x00\x01garbage\xff" * 10, "not a readable ONNX model"),
    (b"hello world", "not a readable ONNX model"),
], ids=["zero-bytes", "garbage", "text"])
def test_audit_refuses_empty_or_unparsable_onnx(content, needle, tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(content)
    assert_one_line_error(run_cli("export.audit", p), "export.audit", needle)


def test_audit_refuses_graphless_onnx(tmp_path):
    import onnx
    from onnx import helper

    m = helper.make_model(helper.make_graph([], "empty", [], []))
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    assert_one_line_error(run_cli("export.audit", p), "export.audit", "no graph")


def test_audit_refuses_untyped_io(tmp_path):
    """Found by fuzzing flipped bytes: an output without an element type was a KeyError."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    assert_one_line_error(run_cli("export.audit", p), "export.audit", "no valid element type")


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_audit_empty_file_any_format(suffix, tmp_path):
    p = tmp_path / f"m{suffix}"
    p.write_bytes(b"")
    assert_one_line_error(run_cli("export.audit", p), "export.audit", "is empty (0 bytes)")


def test_evaluate_output_width_vs_card(tmp_path):
    """A 5-output model against a 10-class card: one line, not "top-1 0.0" and exit 0."""
    tiny_onnx(tmp_path / "tiny.onnx", classes=5)
    tiny_card(tmp_path)
    labelled_folder(tmp_path / "data", classes=("cat", "truck"))
    r = run_cli("quant.evaluate", "--model", tmp_path / "tiny.onnx", "--data", tmp_path / "data")
    assert_one_line_error(r, "quant.evaluate", "card lists 10 classes but tiny.onnx outputs 5")
    r = run_cli("quant.evaluate", "--card", tmp_path / "tiny.json", "--data", tmp_path / "data")
    assert_one_line_error(r, "quant.evaluate", "card lists 10 classes but tiny.onnx outputs 5")


def test_check_logits_labels_and_ref():
    from quant.metrics import check_logits, summarize

    x = np.zeros((3, 5), np.float32)
    with pytest.raises(ArmqError, match="label 7 but the model has only 5 outputs"):
        check_logits(x, np.array([0, 7, 1]), None)
    with pytest.raises(ArmqError, match="differs from the reference"):
        check_logits(x, np.array([0, 1, 1]), np.zeros((3, 4)))
    with pytest.raises(ArmqError, match="not \\(images, classes\\)"):
        check_logits(np.zeros((3, 5, 1)), np.array([0, 1, 1]), None)
    assert summarize(x, np.array([0, 1, 2]), None, num_classes=5)["n"] == 3


# ---- 7. what a terminal shows is escaped ---------------------------------------------------------

@pytest.mark.parametrize("raw,want", [
    ("a\nb", "a\\nb"), ("\x1b[31mred", "\\x1b[31mred"), ("nul\x00", "nul\\x00"),
    ("del\x7f", "del\\x7f"), ("c1\x9b", "c1\\x9b"), ("ls\u2028", "ls\\u2028"),
    ("tab\there", "tab\\there"), ("café ✓", "café ✓"), ("plain", "plain"),
], ids=["newline", "ansi", "nul", "del", "c1-csi", "line-sep", "tab", "unicode", "plain"])
def test_shown(raw, want):
    assert shown(raw) == want


def test_skip_warning_escapes_file_names(tmp_path):
    from zoo.data import load_images

    root = labelled_folder(tmp_path / "d", classes=("cat",))
    (root / "cat" / "evil\n\x1b[2Jname.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning) as rec:
        got = load_images(root, SIZE, SIZE)
    msgs = [str(w.message) for w in rec]
    assert len(got.skipped) == 1
    assert any("evil\\n\\x1b[2Jname.png" in m for m in msgs)
    assert not any("\n" in m or "\x1b" in m for m in msgs)


def test_cli_error_line_escapes_whole_message():
    def main(argv):
        raise ArmqError("cannot read data/evil\n\x1b[2Jname.png (bad)")
    rc, err = _run_entry(main)
    assert rc == 2 and err.count("\n") == 1 and "\x1b" not in err
    assert err == "python -m prog: error: cannot read data/evil\\n\\x1b[2Jname.png (bad)\n"


def test_cli_data_error_names_escaped_end_to_end(tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx")
    tiny_card(tmp_path)
    evil = tmp_path / "no\x1b[31msuch\ndir"
    r = run_cli("quant.evaluate", "--model", tmp_path / "tiny.onnx", "--data", evil)
    assert_one_line_error(r, "quant.evaluate", "\\x1b[31msuch\\ndir")


def test_compare_card_names_escaped(tmp_path):
    docs = [{**GOOD_RESULT, "model": {"file": "a.onnx", "card_name": "evil\x1b[2J\nname"}},
            {**GOOD_RESULT, "model": {"file": "a.int8.onnx", "card_name": "evil\x1b[2J\nname",
                                      "int8": True}, "timing_ms": {"median": 1.0}}]
    p = tmp_path / "r.json"
    p.write_text(json.dumps(docs))
    r = run_cli("android_bench.compare", p)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout + r.stderr and "evil\\x1b[2J\\nname" in r.stdout


@pytest.mark.parametrize("name", ["evil\x1b[2Jname", "two\nlines", "", 7],
                         ids=["ansi", "newline", "empty", "int"])
def test_card_name_with_control_characters_refused(name, tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx")
    card = tiny_card(tmp_path)
    d = json.loads(card.read_text())
    d["name"] = name
    card.write_text(json.dumps(d))
    labelled_folder(tmp_path / "data")
    r = run_cli("quant.evaluate", "--card", card, "--data", tmp_path / "data")
    assert_one_line_error(r, "quant.evaluate", "'name' must be a plain file stem")
