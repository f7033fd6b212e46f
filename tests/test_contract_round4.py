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

import os
from pathlib import Path

import pytest

from test_contract_round2 import labelled_folder
from test_contract_round3 import model_dir, refused

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
