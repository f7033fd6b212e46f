"""The ssh target against a real OpenSSH server on 127.0.0.1 -- no mock.

The fixture starts Debian's sshd (package openssh-server; installed with apt-get
when missing and we are root) as `sshd -D -e -f <own config>` on a free port of
127.0.0.1 only, with a host key and an authorized client key made here with
ssh-keygen, for the current user. The "board" is this machine: its runner runs
with this test's Python (which has numpy and onnxruntime), in a remote temp dir
under the test's tmp_path so that the test can see it is removed.

Failure paths use real ssh too: a closed port, a key the server does not know,
an unknown host key, a python that is not there, and wrapper interpreters that
hide a package or hang (shell scripts standing in for a board's broken python).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from android_bench.targets.base import (BenchConfig, BenchError, PartialResults, RuntimeMissing,
                                        TargetOptions, TargetUnavailable)
from android_bench.targets.ssh import (SshDestination, SshTarget, classify_ssh_failure,
                                       make_target, missing_runtime, parse_destination,
                                       parse_probe)

SSHD = "/usr/sbin/sshd"


# ---- pure parts -----------------------------------------------------------------------

@pytest.mark.parametrize("spec,port,want", [
    ("pi@board", None, SshDestination("board", "pi", None)),
    ("pi@board:2222", None, SshDestination("board", "pi", 2222)),
    ("pi@board:2222", 22, SshDestination("board", "pi", 22)),
    ("board", None, SshDestination("board", None, None)),
    ("root@[::1]:2200", None, SshDestination("::1", "root", 2200)),
    ("fe80::1", None, SshDestination("fe80::1", None, None)),
    ("u@10.0.0.7", 2022, SshDestination("10.0.0.7", "u", 2022)),
])
def test_parse_destination(spec, port, want):
    assert parse_destination(spec, port) == want


@pytest.mark.parametrize("spec,why", [
    ("", "--target ssh needs --host user@board[:port]"),
    ("-oProxyCommand=touch_x", "'-oProxyCommand=touch_x' is not a host name or address"),
    ("pi@-oProxyCommand=x", "'-oProxyCommand=x' is not a host name or address"),
    ("pi@board:abc", "port 'abc' is not a number"),
    ("pi@board:70000", "port 70000 out of range"),
    ("p;i@board", "bad user name 'p;i'"),
    ("pi@bo ard", "'bo ard' is not a host name or address"),
    ("pi@$(reboot)", "'$(reboot)' is not a host name or address"),
    ("pi@[::1", "write IPv6 addresses as [addr] or [addr]:port"),
])
def test_parse_destination_rejects(spec, why):
    with pytest.raises(BenchError) as e:
        parse_destination(spec)
    # One line that names the flag and the reason (a user error, not a crash).
    msg = str(e.value)
    assert "\n" not in msg and why in msg and (spec == "" or msg.startswith(f"--host {spec!r}: "))


def test_command_lines_are_lists_with_options_first(tmp_path):
    key = tmp_path / "k"
    key.write_text("x")
    t = SshTarget(SshDestination("::1", "pi", 2222), key=str(key), strict="yes",
                  known_hosts=str(tmp_path / "kh"))
    a = t.ssh_argv("echo hi")
    assert a[0] == "ssh" and a[-3:] == ["--", "pi@::1", "echo hi"]
    assert "BatchMode=yes" in a and "StrictHostKeyChecking=yes" in a
    assert a[a.index("-p") + 1] == "2222" and a[a.index("-i") + 1] == str(key)
    s = t.scp_argv(["/m/x y.onnx"], t.dest.scp_spec("/tmp/d/"))
    assert s[0] == "scp" and s[s.index("-P") + 1] == "2222"
    assert s[-3:] == ["--", "/m/x y.onnx", "pi@[::1]:/tmp/d/"]
    no = SshTarget(SshDestination("b"), strict="no")
    assert "UserKnownHostsFile=/dev/null" in no.ssh_argv("true")


def test_classify_ssh_failure_one_line():
    d = SshDestination("board", "pi", 2222)
    cases = {
        "ssh: connect to host board port 2222: Connection refused": "connection refused",
        "ssh: connect to host board port 2222: Connection timed out": "unreachable",
        "ssh: Could not resolve hostname board: Name or service not known": "cannot resolve",
        "pi@board: Permission denied (publickey).": "authentication failed",
        "Host key verification failed.": "host key not in known_hosts",
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.":
            "CHANGED",
    }
    for err, want in cases.items():
        msg = classify_ssh_failure(err, d)
        assert want in msg and "\n" not in msg, (err, msg)


def test_probe_parsing_and_runtime_check():
    line = 'motd noise\nARMQ-PROBE {"python": "3.11.2", "machine": "aarch64", "modules": ' \
           '{"numpy": "1.26.4", "onnxruntime": null, "ai_edge_litert": "1.2.0", "tflite_runtime": null}}'
    info = parse_probe(line)
    assert info["machine"] == "aarch64"
    assert missing_runtime(info, ".tflite") is None
    assert "onnxruntime" in missing_runtime(info, ".onnx")
    assert parse_probe("no marker here") is None


def test_remote_job_records_pid_and_keeps_exit_status(tmp_path):
    """The job line ssh and adb both send (remote.job_cmd), run by a local sh: the
    program runs in the session folder with its quoted arguments, its pid file is
    gone afterwards, and its exit status is the line's."""
    from android_bench.targets.remote import job_cmd, remote_cleanup_cmd
    tmp = tmp_path / "sess"
    (tmp / "m0").mkdir(parents=True)
    prog = _wrapper(tmp_path, "prog", 'echo "$#:$1" > m0/out; exit 3\n')
    p = subprocess.run(["sh", "-c", job_cmd(str(tmp), 0, prog, ["a b", "c"])], timeout=30)
    assert p.returncode == 3
    assert (tmp / "m0" / "out").read_text().strip() == "2:a b"
    assert not (tmp / "m0" / "pid").exists()
    subprocess.run(["sh", "-c", remote_cleanup_cmd(str(tmp))], check=True, timeout=30)
    assert not tmp.exists()


# ---- the real sshd --------------------------------------------------------------------

def _ensure_sshd() -> str:
    if os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("scp"):
        return SSHD
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("needs Debian's openssh-server (apt-get install openssh-server)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "openssh-server", "openssh-client"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0 or not os.path.exists(SSHD):
        pytest.fail(f"apt-get install openssh-server failed: {p.stderr.strip()[-300:]}")
    return SSHD


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "armq-test",
                    "-f", str(path)], check=True, timeout=30)
    return path


class Sshd:
    def __init__(self, root: Path, sftp: bool = True):
        self.root = root
        self.port = _free_port()
        self.host_key = _keygen(root / "host_key")
        self.client_key = _keygen(root / "client_key")
        self.other_key = _keygen(root / "other_key")
        auth = root / "authorized_keys"
        auth.write_text((root / "client_key.pub").read_text())
        auth.chmod(0o600)
        self.known_hosts = root / "known_hosts"
        ktype, kdata = (root / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {ktype} {kdata}\n")
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {self.host_key}",
            "PidFile none", f"AuthorizedKeysFile {auth}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            f"AllowUsers {_user()}", "MaxStartups 20:30:60", "LogLevel VERBOSE",
            *(["Subsystem sftp internal-sftp"] if sftp else []), ""]))
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sshd":
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir
        t = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True,
                           timeout=30)
        assert t.returncode == 0, f"sshd -t: {t.stderr}"
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"sshd exited {self.proc.returncode}: {self.log.read_text()[-500:]}"
                if os.geteuid() != 0:
                    pytest.skip(f"cannot run a private sshd as non-root here ({msg})")
                pytest.fail(msg)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        pytest.fail("sshd did not listen within 15 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the listener and its session children
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)


def _user() -> str:
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    _ensure_sshd()
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real CIFAR-10 ShuffleNet v1 (width 0.5) in ONNX with its model card."""
    import torch

    import zoo
    from export.card import ModelCard, save_card
    from zoo.cost import measure

    out = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = zoo.create_model("shufflenet_v1", dataset="cifar10", width=0.5).eval()
    size = model.default_cfg.input_size
    path = out / "shufflenet_v1_w05_cifar10.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"], opset_version=17)
    rep = measure(model, size)
    card = ModelCard(name=path.stem, variant=model.variant.to_dict(),
                     input={"name": "input", "shape": [1, 3, size, size], "layout": "NCHW",
                            "dtype": "float32"},
                     output={"name": "logits", "shape": [1, 10]},
                     preprocessing=model.default_cfg.to_dict(),
                     class_names=list(model.default_cfg.class_names),
                     cost={"macs": rep.macs, "params": rep.params,
                           "memory_access": rep.memory_access},
                     source={"weights": "random"})
    save_card(card, out / f"{path.stem}.json")
    return path


def _target(sshd: Sshd, tmp_path: Path, python: str = sys.executable, **kw) -> SshTarget:
    remote = tmp_path / "board_tmp"
    remote.mkdir(exist_ok=True)
    opts = TargetOptions(host=f"{_user()}@127.0.0.1:{sshd.port}", python=python,
                         remote_dir=str(remote),
                         extra={"ssh_key": str(kw.pop("key", sshd.client_key)),
                                "ssh_strict": kw.pop("strict", "yes"),
                                "known_hosts": str(kw.pop("known_hosts", sshd.known_hosts)),
                                "connect_timeout": 5})
    t = make_target(opts)
    t.log = lambda msg: None
    return t


def _wrapper(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


FAST = dict(threads=1, warmup=2, runs=10)


def test_ssh_runs_real_model_and_cleans_up(sshd, tiny_model, tmp_path):
    """A real model with real inputs over a real ssh connection; outputs come back;
    the remote temp dir and the shared connection are gone afterwards."""
    import numpy as np
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "in put.npy", x)                   # a space: quoting on both sides
    t = _target(sshd, tmp_path)
    masters = []
    connect = t.connect

    def spy():
        connect()
        masters.append((t._master.pid, t._cm_dir))
    t.connect = spy
    t0 = time.monotonic()
    results = t.run([tiny_model], BenchConfig(**FAST, timeout_s=300,
                                              inputs=str(tmp_path / "in put.npy"),
                                              save_outputs=True, out_dir=str(tmp_path / "out")))
    assert time.monotonic() - t0 < 300
    # one shared connection, stopped at the end together with its socket folder
    assert len(masters) == 1
    pid, cm_dir = masters[0]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(cm_dir)
    assert len(results) == 1
    r = results[0]
    assert r["format"] == "armq-bench/1"
    assert r["model"]["file"] == tiny_model.name
    assert r["model"]["cost"]["macs"] > 0          # the card travelled with the model
    assert r["runtime"]["name"] == "onnxruntime"
    tm = r["timing_ms"]
    assert tm["runs"] == 10 and 0 < tm["min"] <= tm["median"] <= tm["max"]
    assert r["target"]["kind"] == "ssh" and r["target"]["emulated"] is False
    assert r["target"]["port"] == sshd.port
    assert r["target"]["board"]["modules"]["onnxruntime"]
    assert r["input"]["source"]["kind"] == "file" and r["input"]["source"]["n"] == 3
    outs = np.load(tmp_path / "out" / f"{tiny_model.name}.outputs.npy")
    assert outs.shape == (3, 1, 10)
    # the remote temp dir existed (mktemp under remote_dir) and is gone now
    assert t.last_tmp and t.last_tmp.startswith(str(tmp_path / "board_tmp") + "/armq-bench.")
    assert not os.path.exists(t.last_tmp)
    assert list((tmp_path / "board_tmp").iterdir()) == []


def test_closed_port_is_a_quick_one_line_error(tiny_model, tmp_path):
    port = _free_port()  # nothing listens there
    t = make_target(TargetOptions(host=f"root@127.0.0.1:{port}",
                                  extra={"ssh_strict": "no", "connect_timeout": 5}))
    t0 = time.monotonic()
    with pytest.raises(TargetUnavailable) as e:   # the probe fails before anything is copied
        t.run([tiny_model], BenchConfig(**FAST))
    assert time.monotonic() - t0 < 30
    msg = str(e.value)
    assert "connection refused" in msg and "\n" not in msg


@pytest.mark.skipif(not (Path(__file__).resolve().parent.parent / "android_bench" /
                          "__main__.py").exists(), reason="android_bench CLI not there yet")
def test_closed_port_through_the_cli(tiny_model, tmp_path):
    """The same through `python -m android_bench`: one line, non-zero exit."""
    port = _free_port()
    p = subprocess.run([sys.executable, "-m", "android_bench", "--target", "ssh",
                        "--host", f"root@127.0.0.1:{port}", "--ssh-strict", "no",
                        "--model", str(tiny_model), "--runs", "5", "--warmup", "1",
                        "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode != 0
    err = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert err and "connection refused" in err[-1], p.stderr


def test_wrong_key_is_an_auth_error(sshd, tiny_model, tmp_path):
    t = _target(sshd, tmp_path, key=sshd.other_key)
    with pytest.raises(TargetUnavailable) as e:
        t.run([tiny_model], BenchConfig(**FAST))
    assert "authentication failed" in str(e.value)


def test_unknown_host_key_is_refused_with_strict_yes(sshd, tiny_model, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    t = _target(sshd, tmp_path, known_hosts=empty)
    with pytest.raises(TargetUnavailable) as e:
        t.probe()
    assert "host key not in known_hosts" in str(e.value)
    # accept-new records it on first use and then works
    t2 = _target(sshd, tmp_path, known_hosts=empty, strict="accept-new")
    try:
        assert t2.probe()["modules"]["numpy"]
    finally:
        t2.close()
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(empty)],
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0, "accept-new did not record the host key"


def test_missing_python_numpy_and_runtime(sshd, tiny_model, tmp_path):
    t = _target(sshd, tmp_path, python="/nonexistent/python3")
    with pytest.raises(TargetUnavailable) as e:
        t.probe()
    t.close()
    assert "no '/nonexistent/python3' on the board" in str(e.value)

    # a board python on which `import numpy` / `import onnxruntime` fail
    for pkg in ("numpy", "onnxruntime"):
        fake = tmp_path / f"no_{pkg}"
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "__init__.py").write_text(f"raise ImportError('no {pkg} here')\n")
        py = _wrapper(tmp_path, f"py_no_{pkg}",
                      f'PYTHONPATH={fake} exec {sys.executable} "$@"\n')
        t = _target(sshd, tmp_path, python=py)
        if pkg == "numpy":
            with pytest.raises(TargetUnavailable) as e:
                t.probe()
            t.close()
            assert "numpy is missing" in str(e.value)
        else:
            with pytest.raises(PartialResults) as e:
                t.run([tiny_model], BenchConfig(**FAST))
            assert isinstance(e.value, PartialResults)
            assert "no runtime for .onnx" in str(e.value) and "onnxruntime" in str(e.value)
    assert list((tmp_path / "board_tmp").iterdir()) == []


def test_hung_run_times_out_is_killed_and_keeps_finished_results(sshd, tiny_model, tmp_path):
    hang = tmp_path / "m" / "hang_model.onnx"
    hang.parent.mkdir()
    shutil.copy(tiny_model, hang)
    pidfile = tmp_path / "hang.pid"
    py = _wrapper(tmp_path, "py_hangs", f"""case "$*" in
  *hang_model*) echo $$ > {pidfile}; exec sleep 600 ;;
esac
exec {sys.executable} "$@"
""")
    t = _target(sshd, tmp_path, python=py)
    t0 = time.monotonic()
    with pytest.raises(PartialResults) as e:
        t.run([hang, tiny_model], BenchConfig(**FAST, timeout_s=15))
    assert time.monotonic() - t0 < 300     # 15 s for the hang + one real run, on a busy CI
    assert "no result after 15 s" in str(e.value) and "1 of 2 models finished" in str(e.value)
    assert [r["model"]["file"] for r in e.value.results] == [tiny_model.name]
    assert e.value.failures[0]["model"] == str(hang.resolve())
    pid = int(pidfile.read_text())
    for _ in range(50):  # the hung process on the "board" was killed
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the hung runner was left running on the board")
    assert list((tmp_path / "board_tmp").iterdir()) == []
    json.dumps(e.value.results)  # results stay serializable


def test_board_without_sftp_server_uses_legacy_scp(tiny_model, tmp_path):
    """Dropbear boards and trimmed sshd_configs have no SFTP: scp -O is used.
    (Also without connection sharing: a new ssh connection per step.)"""
    _ensure_sshd()
    (tmp_path / "nosftp_sshd").mkdir()
    server = Sshd(tmp_path / "nosftp_sshd", sftp=False).start()
    try:
        t = _target(server, tmp_path)
        t.multiplex = False
        t.probe()
        tmp = t._start_session()                   # mktemp + scp of runner.py
        assert t.scp_legacy and os.path.isfile(f"{tmp}/runner.py")
        assert t.cleanup() and not os.path.exists(tmp)
        t.close()
    finally:
        server.stop()
