"""Hardening, round 4: the classes of issue 28 that round 3 left open.

  1. an output inside an input folder (or a file a link in it names) replaces the data set;
  2. a device inventory's `known_hosts` chose where ssh appends a host key;
  3. memory and time from small inputs (long thin images, archives of many empty members,
     --input-size with --source, JSON of many tiny elements);
  4. hangs: a port that answers but is not Ray, a results.json that is a FIFO.

Each CLI case asserts the contract of rounds 2 and 3 (non-zero exit, last stderr line
`<prog>: error: ...` naming the problem, no traceback) and that nothing under the test's
folder changed.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO
from test_contract_round2 import assert_one_line_error, labelled_folder, tiny_onnx
from test_contract_round3 import model_dir, refused, run_inproc

from zoo.util import ArmqError, check_not_input, declare_inputs


# ---- 1. an output inside an input folder ---------------------------------------------------

def _train(data: Path, out: Path) -> tuple:
    return ("--model", "mobilenet_v1", "--width", "0.25", "--dataset", "cifar10", "--data", data,
            "--epochs", 1, "--batch-size", 2, "--out", out)


@pytest.mark.parametrize("where", ["top", "nested", "via-dotdot"])
def test_train_out_inside_data_refused(where, tmp_path):
    """`zoo.train --data data/ --out data/train.tar` replaced the training set, exit 0."""
    data = labelled_folder(tmp_path / "data")
    (data / "train.tar").write_bytes(b"the training set")
    out = {"top": data / "train.tar", "nested": data / "cat" / "ck.pt",
           "via-dotdot": tmp_path / "x" / ".." / "data" / "new.pt"}[where]
    (tmp_path / "x").mkdir()
    refused(tmp_path, "zoo.train", "is inside the input folder", *_train(data, out))


def test_train_out_a_file_a_link_in_data_names(tmp_path):
    """The image is elsewhere; the data set holds a symlink to it: writing there changes it."""
    data = labelled_folder(tmp_path / "data")
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    (elsewhere / "img.png").write_bytes((data / "cat" / "0.png").read_bytes())
    (data / "cat" / "linked.png").symlink_to(elsewhere / "img.png")
    refused(tmp_path, "zoo.train", "a link in the input folder", *_train(data, elsewhere / "img.png"))


def test_train_out_in_a_folder_linked_into_data(tmp_path):
    data = labelled_folder(tmp_path / "data")
    far = labelled_folder(tmp_path / "far", classes=("dog",))
    (data / "more").symlink_to(far / "dog")
    refused(tmp_path, "zoo.train", "is inside the input folder", *_train(data, far / "dog" / "0.png"))


def test_ptq_out_inside_calib_refused(tmp_path):
    """The INT8 model and the card update would land among the calibration images."""
    art = model_dir(tmp_path)
    labelled_folder(art / "imgs")
    refused(tmp_path, "quant.ptq", "is inside the input folder", "--model", art / "tiny.onnx",
            "--calib", art, "--out", art, "--num-calib", 2)


def test_export_out_inside_images_refused(tmp_path):
    imgs = labelled_folder(tmp_path / "imgs")
    refused(tmp_path, "export.onnx", "is inside the input folder", "--model", "mobilenet_v1",
            "--dataset", "cifar10", "--images", imgs, "--out", imgs / "art")


def test_deploy_out_inside_calib_data_refused(tmp_path):
    calib = labelled_folder(tmp_path / "calib")
    refused(tmp_path, "deploy", "is inside the input folder", "--models", "mobilenet_v1",
            "--calib-data", calib, "--out", calib / "runs")


def test_folder_check_unit(tmp_path):
    """Outside the folder is fine; a link loop inside it ends the walk."""
    data = labelled_folder(tmp_path / "data")
    (data / "loop").symlink_to(data)
    (data / "dangling.png").symlink_to(tmp_path / "not-yet.png")
    check_not_input(tmp_path / "ck.pt", [data])
    for bad in (data / "loop" / "x.pt", tmp_path / "not-yet.png", data):
        with pytest.raises(ArmqError, match="input"):
            check_not_input(bad, [data])
    with pytest.raises(ArmqError, match="is inside the input folder"):
        declare_inputs(data, outputs=[data / "cat"])
    os.unlink(data / "loop")


# ---- 2. a device file does not choose where ssh writes ----------------------------------------

def _inventory(path: Path, extra: str = "") -> Path:
    path.write_text(f'[[device]]\nname = "pi"\nkind = "ssh"\nhost = "pi.lan"\n{extra}')
    return path


def test_inventory_known_hosts_refused(tmp_path):
    """ssh (accept-new) appended a host-key line to whatever file the inventory named."""
    victim = tmp_path / "victim.txt"
    victim.write_text("a file ssh must not append to\n")
    inv = _inventory(tmp_path / "lab.toml", f'known_hosts = "{victim}"\n')
    refused(tmp_path, "deploy", "field 'known_hosts' is not taken from an inventory",
            "--models", "mobilenet_v1", "--targets", "ssh", "--devices", inv,
            "--out", tmp_path / "runs")


def test_inventory_boards_use_armq_known_hosts(tmp_path, monkeypatch):
    from android_bench.targets.ssh import SshTarget, armq_known_hosts, parse_destination
    from deploy.devices import load_devices

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    inv = _inventory(tmp_path / "lab.toml")
    (d,) = load_devices(inv)
    own = tmp_path / "state" / "armq" / "known_hosts"
    assert armq_known_hosts() == own and d.bench_args()[2:4] == ["--known-hosts", str(own)]
    (d,) = load_devices(inv, tmp_path / "mine")           # deploy --known-hosts FILE
    assert d.bench_args()[2:4] == ["--known-hosts", str(tmp_path / "mine")]
    t = SshTarget(parse_destination("pi.lan", None), known_hosts=str(own))
    assert own.parent.is_dir() and f"UserKnownHostsFile={own}" in t.ssh_argv("true")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")     # the XDG rule: absolute only
    assert armq_known_hosts() == Path.home() / ".local" / "state" / "armq" / "known_hosts"


# ---- 3. memory and time from small inputs ---------------------------------------------------

def _thin_png(path: Path, w: int = 10_000_000) -> Path:
    """A w x 1 px PNG (a few dozen KB): 30 MB decoded, 10 Gpx once scaled to a 32 px side."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, 1)).save(path, compress_level=1)
    return path


def test_thin_image_resize_bounded():
    from PIL import Image

    from zoo.data import DataError, resize_crop

    with pytest.raises(DataError, match=r"resized to 320000000x32 .* \(ARMQ_MAX_PIXELS\)"):
        resize_crop(Image.new("RGB", (10_000_000, 1)), 32, 32)
    assert resize_crop(Image.new("RGB", (64, 48)), 32, 32).shape == (32, 32, 3)   # still works


def _peak_mb_of(*argv: object, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m ...` under a fresh parent: its peak RSS in MB (RUSAGE_CHILDREN of that
    parent sees only this child) and its output."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(r.returncode)")
    r = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", *map(str, argv)],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    *lines, peak = r.stderr.rstrip().splitlines()
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout, "\n".join(lines)), \
        int(peak) / 1024


def test_thin_image_cli_one_line_small_memory(tmp_path):
    """quant.evaluate on a folder holding a 10,000,000 x 1 px PNG used 5.4 GB."""
    _thin_png(tmp_path / "thin" / "cat" / "thin.png")
    art = model_dir(tmp_path)
    r, peak = _peak_mb_of("quant.evaluate", "--model", art / "tiny.onnx",
                          "--data", tmp_path / "thin")
    assert_one_line_error(r, "quant.evaluate", "none of the 1 image files could be decoded")
    assert "thin.png: 10000000x1 resized to 80000000x8 = 640.0 Mpx" in r.stderr and "(ARMQ_MAX_PIXELS)" in r.stderr
    assert peak < 1024, (peak, r.stderr[-2000:])


def _empty_members_tar(path: Path, n: int) -> Path:
    """n empty `c/<i>.png` members, gzipped: the header blocks are written directly (a
    million-member archive is 7 MB; tarfile.addfile would take minutes to make it)."""
    header = tarfile.TarInfo("c/0.png").tobuf(format=tarfile.USTAR_FORMAT)
    with gzip.open(path, "wb", compresslevel=1) as gz:
        for i in range(n):
            info = tarfile.TarInfo(f"c/{i}.png")
            gz.write(info.tobuf(format=tarfile.USTAR_FORMAT) if i else header)
        gz.write(bytes(1024))
    return path


def test_member_count_capped_while_listing(tmp_path, monkeypatch):
    from zoo import data

    tar = _empty_members_tar(tmp_path / "many.tar.gz", 61)
    monkeypatch.setattr(data, "MAX_FILES", 60)
    with pytest.raises(data.DataError, match="more than 60 files or archive members"):
        data.list_images(tar)
    folder = labelled_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=20)
    with pytest.raises(data.DataError, match="ARMQ_MAX_FILES"):
        data.list_images(folder)          # 60 images and 3 folders
    monkeypatch.setattr(data, "MAX_FILES", 61)
    assert len(data.list_images(tar)) == 61


def test_member_count_cli(tmp_path):
    tar = _empty_members_tar(tmp_path / "many.tar.gz", 2_001)
    art = model_dir(tmp_path)
    r = run_inproc("quant.evaluate", "--model", art / "tiny.onnx", "--data", tar,
                   env={"ARMQ_MAX_FILES": "2000"})
    assert_one_line_error(r, "quant.evaluate", "more than 2,000 files or archive members "
                          "(ARMQ_MAX_FILES")


def test_source_input_size_bounded_where_it_enters(tmp_path):
    """--input-size with --source never reached resolve_variant: 9000 px grew past 7.5 GB."""
    refused(tmp_path, "export.onnx", "--input-size 9000 is too large (at most 4096)",
            "--source", "torchvision:resnet18", "--input-size", 9000, "--mean", 0.5, 0.5, 0.5,
            "--std", 0.2, 0.2, 0.2, "--out", tmp_path / "art")
    refused(tmp_path, "zoo.cost", "--num-classes 0 must be positive", "--model", "mobilenet_v1",
            "--num-classes", 0)


def _many_lists(path: Path, n: int) -> Path:
    path.write_bytes(b"[" + b"[]," * n + b"[]]")
    return path


@pytest.mark.parametrize("module", ["deploy.rundiff", "deploy.report", "deploy.zoo_results"])
def test_json_of_many_tiny_values_refused(module, tmp_path):
    """60 MB of `[],` (under the byte cap) became 3 GB of Python lists."""
    f = _many_lists(tmp_path / "results.json", 2_100_000)       # 6.3 MB: just past the count cap
    args = {"deploy.rundiff": (f, f), "deploy.report": (f,),
            "deploy.zoo_results": (f, "--out", tmp_path / "zoo.md")}[module]
    refused(tmp_path, module, "has too many values (~4,200,002 > 2,000,000; raise "
            "ARMQ_MAX_JSON_ITEMS", *args)


def test_zoo_results_reads_json_bounded(tmp_path):
    """A deep file was "internal error: RecursionError" in deploy.zoo_results."""
    f = tmp_path / "results.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    refused(tmp_path, "deploy.zoo_results", "is nested too deeply", f, "--out", tmp_path / "z.md")
    f.write_text('{"models": [')
    refused(tmp_path, "deploy.zoo_results", "is not valid JSON", f, "--out", tmp_path / "z.md")


# ---- 4. every wait has a bound ----------------------------------------------------------------

@contextlib.contextmanager
def _fifo(path: Path) -> Iterator[Path]:
    """A FIFO no one writes to; after 20 s a writer opens and closes it, so a reader that
    blocks on it (the bug) ends with EOF and fails the test instead of hanging the suite."""
    os.mkfifo(path)
    done = threading.Event()

    def unblock() -> None:
        if not done.wait(20):
            with contextlib.suppress(OSError), open(path, "wb"):
                pass
    t = threading.Thread(target=unblock, daemon=True)
    t.start()
    try:
        yield path
    finally:
        done.set()
        t.join()


@pytest.mark.parametrize("module", ["deploy.report", "deploy.rundiff", "deploy.zoo_results"])
def test_results_json_fifo_refused(module, tmp_path):
    """A results.json that is a FIFO blocked the reader forever."""
    with _fifo(tmp_path / "results.json") as f:
        args = {"deploy.report": (f,), "deploy.rundiff": (tmp_path, tmp_path),
                "deploy.zoo_results": (f, "--out", tmp_path / "zoo.md")}[module]
        t0 = time.monotonic()
        refused(tmp_path, module, "results.json is not a regular file", *args)
        assert time.monotonic() - t0 < 15


def test_load_json_regular_files_still_read(tmp_path):
    from zoo.util import load_json

    (tmp_path / "a.json").write_text('{"a": [1, 2]}')
    (tmp_path / "link.json").symlink_to(tmp_path / "a.json")
    assert load_json(tmp_path / "link.json") == {"a": [1, 2]}
    with pytest.raises(ArmqError, match="is a folder, not a file"):
        load_json(tmp_path)


class _Server:
    """A TCP server on 127.0.0.1 that accepts and then says `reply` (nothing when None)."""

    def __init__(self, reply: bytes | None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply, self.conns = reply, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                c, _ = self.sock.accept()
                self.conns.append(c)
                if self.reply is not None:
                    c.sendall(self.reply)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("reply,needle", [
    (None, "says nothing Ray would (0.5 s without a gRPC reply)"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "the service there is not Ray"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "the service there is not Ray"),
], ids=["silent", "http", "ssh"])
def test_ray_address_that_is_not_ray(reply, needle):
    from deploy.executors.ray import _check_reachable

    srv = _Server(reply)
    try:
        t0 = time.monotonic()
        with pytest.raises(ArmqError, match=re.escape(needle)):
            _check_reachable(f"127.0.0.1:{srv.port}", timeout=0.5)
        assert time.monotonic() - t0 < 5
        # a gRPC server's first frame (an empty SETTINGS) passes: the check is not "refuse all"
        srv.reply = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
        _check_reachable(f"127.0.0.1:{srv.port}", timeout=0.5)
    finally:
        srv.close()


def test_deploy_ray_address_not_ray_cli(tmp_path):
    pytest.importorskip("ray")
    srv = _Server(b"garbage, not gRPC\n")
    model = tiny_onnx(tmp_path / "m.onnx")      # a file model: no torch import to resolve it
    try:
        refused(tmp_path, "deploy", "the service there is not Ray", "--models",
                f"{model}:name=m:dataset=cifar10",
                "--executor", "ray", "--ray-address", f"127.0.0.1:{srv.port}",
                "--out", tmp_path / "runs")
    finally:
        srv.close()


def test_zip_member_count_refused_before_its_directory_is_read(tmp_path, monkeypatch):
    """zipfile builds one object per entry before anything can be counted: a million-entry
    zip (a few MB) cost hundreds of MB. The count its end record declares is checked first."""
    import zipfile

    from zoo import data

    zpath = tmp_path / "many.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(61):
            zf.writestr(f"a/{i}.png", b"")
    assert data.zip_entry_count(zpath) == 61
    monkeypatch.setattr(data, "MAX_FILES", 60)

    real_zipfile = zipfile.ZipFile

    def no_directory(*a, **k):
        raise AssertionError("the zip's directory was parsed before the count was checked")
    monkeypatch.setattr(data.zipfile, "ZipFile", no_directory)
    with pytest.raises(data.DataError, match="more than 60 files or archive members"):
        data.list_images(zpath)
    monkeypatch.setattr(data, "MAX_FILES", 61)
    monkeypatch.setattr(data.zipfile, "ZipFile", real_zipfile)
    assert len(data.list_images(zpath)) == 61


def test_zip64_entry_count_is_read(tmp_path):
    """A ZIP64 end record (forced here) declares the count in its own field."""
    import zipfile

    from zoo import data

    zpath = tmp_path / "z64.zip"
    with zipfile.ZipFile(zpath, "w", allowZip64=True) as zf:
        for i in range(3):
            with zf.open(f"{i}.png", "w", force_zip64=True) as f:
                f.write(b"x")
    assert data.zip_entry_count(zpath) == 3
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    assert data.zip_entry_count(tmp_path / "junk.zip") is None
