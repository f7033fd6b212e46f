"""deploy on boards and phones: ssh and adb devices of a --devices inventory.

The board and the phone are this machine behind the stand-in ssh/scp/adb of
tests/_fake_remote.py. Real here: deploy's targets and plan, android_bench's ssh and adb
targets (probe, copies, runner.py on the "device", cleanup), the INT8 recipe picked from
the probed CPU flags and quant.ptq's file for it. Not covered: a real transport, board or
phone (and timings on this loaded host say nothing about one).
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pytest

from _fake_remote import install_fake_adb, install_fake_ssh
from conftest import run_cli
from test_cli_contract import tiny_onnx

from android_bench.targets.ssh import armq_known_hosts
from deploy.devices import Device, DeviceKind, load_devices, resolve_targets
from deploy.spec import SpecError, parse_target_list

# An Armv8.2 phone's /proc/cpuinfo (Cortex-A76: dot product), standing in for the phone's.
CPUINFO_A76 = """processor\t: 0
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""


def _inventory(tmp_path: Path) -> Path:
    board, phone = tmp_path / "board_tmp", tmp_path / "phone_tmp"
    board.mkdir(exist_ok=True)
    phone.mkdir(exist_ok=True)
    f = tmp_path / "devices.toml"
    f.write_text(f"""
[[device]]
name = "board-1"
kind = "ssh"
host = "board.lan"
user = "me"
port = 2222
python = "{sys.executable}"
remote_dir = "{board}"

[[device]]
name = "board-down"
kind = "ssh"
host = "me@down.lan"
python = "{sys.executable}"

[[device]]
name = "phone-1"
kind = "adb"
serial = "ZX1"
python = "{sys.executable}"
remote_dir = "{phone}"

[[device]]
name = "a72"
kind = "qemu"
cpu = "cortex-a72"
""")
    return f


# ---- the inventory and the targets (in process) ---------------------------------------------

def test_board_and_phone_fields_become_android_bench_flags(tmp_path):
    devs = {d.name: d for d in load_devices(_inventory(tmp_path))}
    assert devs["board-1"].target == "ssh:board-1" and devs["phone-1"].target == "adb:phone-1"
    assert devs["board-1"].bench_args() == [
        "--host", "me@board.lan", "--ssh-port", "2222", "--known-hosts", str(armq_known_hosts()),
        "--python", sys.executable,
        "--remote-dir", str(tmp_path / "board_tmp")]
    assert devs["phone-1"].bench_args() == [
        "--serial", "ZX1", "--adb-python", sys.executable, "--remote-dir", str(tmp_path / "phone_tmp")]
    # a key file is named relative to the inventory; known_hosts comes from the command line
    f = tmp_path / "keyed.toml"
    f.write_text('[[device]]\nname = "b"\nkind = "ssh"\nhost = "b.lan"\nkey = "keys/id"\n'
                 'strict = "yes"\n')
    (d,) = load_devices(f, tmp_path / "keys" / "known")
    assert d.bench_args()[2:] == ["--ssh-key", str(tmp_path / "keys" / "id"), "--known-hosts",
                                  str(tmp_path / "keys" / "known"), "--ssh-strict", "yes"]


@pytest.mark.parametrize("body,needle", [
    ('kind = "adb"\nserial = "X"\n', "needs field 'python'"),
    ('kind = "ssh"\nhost = "b"\nport = "22"\n', "field 'port' must be an integer"),
    ('kind = "ssh"\nhost = "b"\nport = 70000\n', "field 'port' must be 1-65535"),
    ('kind = "ssh"\nhost = "u@b"\nuser = "v"\n', "field 'user'"),
    ('kind = "ssh"\nhost = "b"\npython = "-c evil"\n', "field 'python'"),
    ('kind = "adb"\npython = "p"\nremote_dir = "tmp/x"\n', "field 'remote_dir'"),
    ('kind = "qemu"\npython = "p"\n', "field 'python' does not apply to kind qemu"),
    ('kind = "ssh"\nhost = "b"\nstrict = "maybe"\n', "field 'strict' must be one of"),
])
def test_board_and_phone_field_errors(tmp_path, body, needle):
    f = tmp_path / "devices.toml"
    f.write_text('[[device]]\nname = "x"\n' + body)
    with pytest.raises(SpecError, match=needle):
        load_devices(f)


def test_targets_name_inventory_devices(tmp_path):
    devs = load_devices(_inventory(tmp_path))
    got = resolve_targets(parse_target_list("local,ssh,adb:phone-1,ssh:board-1"), devs, "inv")
    assert [t.id for t in got] == ["local", "ssh:board-1", "ssh:board-down", "adb:phone-1"]
    for text, needle in [("ssh:board-9", "no device named 'board-9'"),
                         ("adb:board-1", "device 'board-1' is of kind ssh, not adb"),
                         ("ssh:a72", "device 'a72' is of kind qemu, not ssh")]:
        with pytest.raises(SpecError, match=needle):
            resolve_targets(parse_target_list(text), devs, "inv")
    with pytest.raises(SpecError, match="add --devices FILE"):
        resolve_targets(parse_target_list("adb:phone-1"), None, "inv")
    assert Device("p", DeviceKind.ADB, python="py").target == "adb:p"


def test_wrong_device_name_is_one_line(tmp_path, capsys):
    """Through the CLI entry (its one-line contract), in process: no interpreter start."""
    from deploy.cli import entry

    with pytest.raises(SystemExit) as e:
        entry(["--targets", "ssh:pi-9", "--devices", str(_inventory(tmp_path)),
               "--out", str(tmp_path / "runs")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1, lines
    assert "no device named 'pi-9'" in lines[0] and "board-1, board-down" in lines[0]
    assert not (tmp_path / "runs").exists()


# ---- one real sweep on a board and a phone ---------------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    bin_ = tmp / "fakebin"
    install_fake_ssh(bin_)
    install_fake_adb(bin_)
    (tmp / "cpuinfo_a76").write_text(CPUINFO_A76)
    # a user's own CIFAR-size ONNX model (no zoo, no torch: the sweep stays short)
    model = tiny_onnx(tmp / "tiny.onnx", size=32)
    out = tmp / "runs"
    r = run_cli("deploy", "--models", f"{model}:name=tiny:dataset=cifar10", "--targets",
                "ssh,adb:phone-1", "--runtimes", "ort", "--limit-eval", "20", "--runs", "3",
                "--warmup", "1", "--num-calib", "8", "--no-report", "--devices", _inventory(tmp),
                "--out", out, timeout=600,
                env={"PATH": f"{bin_}:{os.environ['PATH']}", "FAKE_REMOTE_LOG": str(tmp / "calls"),
                     "FAKE_CPUINFO": str(tmp / "cpuinfo_a76")})
    (res,) = out.glob("2*/results.json")
    return r, json.loads(res.read_text()), tmp


def test_sweep_benchmarks_on_the_board_and_the_phone(sweep):
    r, doc, tmp = sweep
    assert r.returncode == 1, r.stderr[-3000:]          # board-down's probe failed
    (m,) = doc["models"].values()
    assert m["measured_on"] == {"ssh:board-1": {"node": platform.node(), "device": "board-1"},
                                "adb:phone-1": {"node": platform.node(), "device": "phone-1"}}
    assert doc["run"]["devices"] == ["board-1", "board-down", "phone-1"]
    targets = {t["id"]: t for t in doc["targets"]}
    # the recipe comes from each device's probed CPU: the board is this host, the phone an A76
    from export.card import int8_key
    from quant.config import recipe_for_target
    assert targets["ssh:board-1"]["recipe"]["name"] == recipe_for_target("local").name.value
    assert targets["adb:phone-1"]["recipe"]["name"] == "s8s8"
    assert "asimddp" in targets["adb:phone-1"]["probed"].split(":", 1)[1].split("+")
    for tid in ("ssh:board-1", "adb:phone-1"):
        want = {"onnx", int8_key("onnx", targets[tid]["recipe"]["name"])}
        assert set(m["bench"][tid]) == want, m["bench"][tid].keys()     # its own recipe's file
        for b in m["bench"][tid].values():
            assert b["runs"] == 3 and b["median_ms"] > 0 and b["emulated"] is False
        # its INT8 file also scored on the device (its kernels), beside the same file here;
        # the board is this host, so the two agree exactly
        acc = m["accuracy_on_target"][tid]
        assert acc["key"] == int8_key("onnx", targets[tid]["recipe"]["name"])
        assert acc["n"] == acc["host"]["n"] == 200
        if tid == "ssh:board-1":
            assert acc["agreement"] == acc["host"]["agreement"]
        (st,) = [s for s in doc["stages"] if s["kind"] == "accuracy_on" and s["target"] == tid]
        assert st["status"] == "ok" and st["outputs"]["device"] == tid.split(":")[1]
    # the devices were reached as the inventory says, and left clean
    calls = [eval(line) for line in (tmp / "calls").read_text().splitlines()]
    ssh = [c for c in calls if c[0] == "ssh" and "me@board.lan" in c]
    assert ssh and all(c[c.index("-p") + 1] == "2222" for c in ssh)
    assert all(c[1:3] == ["-s", "ZX1"] for c in calls if c[0] == "adb")
    assert list((tmp / "board_tmp").iterdir()) == [] == list((tmp / "phone_tmp").iterdir())


def test_unreachable_device_fails_its_stage_in_one_line(sweep):
    r, doc, tmp = sweep
    by = {s["id"]: s for s in doc["stages"]}
    probe = by["probe/ssh:board-down"]
    assert probe["status"] == "failed" and "\n" not in probe["reason"]
    assert "down.lan: connection refused" in probe["reason"]
    (bench,) = [s for s in doc["stages"] if s["kind"] == "bench" and s["target"] == "ssh:board-down"]
    assert bench["status"] == "skipped" and "needs probe ssh:board-down" in bench["reason"]
    assert {t["id"]: t["recipe"] for t in doc["targets"]}["ssh:board-down"] is None
    assert doc["run"]["status"] == "failed"
    assert all(s["status"] in ("ok", "skipped") for s in doc["stages"] if s is not probe), \
        [(s["id"], s["reason"]) for s in doc["stages"] if s["status"] == "failed"]


@pytest.mark.slow
def test_sweep_on_a_real_openssh_board(tmp_path):
    """The same through Debian's real sshd on 127.0.0.1 (tests/test_bench_ssh.py's): the
    inventory's user, port, key and strict = "yes", and deploy's --known-hosts, reach ssh and
    scp."""
    from test_bench_ssh import Sshd, _ensure_sshd, _user

    _ensure_sshd()
    (tmp_path / "sshd").mkdir()
    srv = Sshd(tmp_path / "sshd").start()
    board = tmp_path / "board"
    board.mkdir()
    inv = tmp_path / "lab.toml"
    inv.write_text(f'[[device]]\nname = "loopback"\nkind = "ssh"\nhost = "127.0.0.1"\n'
                   f'user = "{_user()}"\nport = {srv.port}\nkey = "sshd/client_key"\n'
                   f'strict = "yes"\n'
                   f'python = "{sys.executable}"\nremote_dir = "{board}"\n')
    try:
        r = run_cli("deploy", "--models", f"{tiny_onnx(tmp_path / 'm.onnx', size=32)}:name=m:"
                    "dataset=cifar10", "--targets", "ssh:loopback", "--runtimes", "ort",
                    "--limit-eval", "20", "--runs", "5", "--warmup", "1", "--num-calib", "8",
                    "--no-report", "--devices", inv, "--known-hosts", srv.known_hosts,
                    "--out", tmp_path / "runs", timeout=600)
    finally:
        srv.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    (res,) = (tmp_path / "runs").glob("2*/results.json")
    doc = json.loads(res.read_text())
    (m,) = doc["models"].values()
    assert m["measured_on"]["ssh:loopback"]["device"] == "loopback"
    assert all(b["runs"] == 5 and b["median_ms"] > 0 for b in m["bench"]["ssh:loopback"].values())
    assert list(board.iterdir()) == []
