"""SSH target: run runner.py on a Linux board (Raspberry Pi, Jetson, an ARM server).

    python -m android_bench --target ssh --host pi@raspberrypi.local[:2222] \\
        --model artifacts/x.int8.onnx [--ssh-key ~/.ssh/id_ed25519] [--ssh-port 22]

What happens, with OpenSSH's own `ssh` and `scp` (no Python SSH library):
 1. probe: `ssh HOST PYTHON -c '<tiny script>'` prints the board's Python, CPU
    architecture and which of numpy / onnxruntime / ai_edge_litert /
    tflite_runtime import. No python3, no numpy, or no runtime for the model's
    format -> a one-line error before anything is copied;
 2. `mktemp -d` on the board (under --remote-dir if given, else $TMPDIR or /tmp);
 3. scp runner.py once, then per model its file and card (and --inputs); scp
    falls back to its legacy protocol (-O) on boards without an SFTP server;
 4. `cd TMP && PYTHON runner.py --model ... --json mI/result.json` (its pid kept
    in mI/pid while it runs, so that a hung run can be killed);
 5. scp the result JSON (and saved outputs) back;
 6. `rm -rf TMP` -- always, also after a failure, a timeout or Ctrl-C.

Every command is an argument list (never shell=True on this side); everything
interpolated into the one remote shell command line is quoted with
shlex.quote, and the host is rejected if it could be read as an ssh option.

Connection options:
  --host user@host[:port]  `[v6addr]:port` for IPv6; a bare name may be an
                           alias from ~/.ssh/config (its User/Port/IdentityFile apply).
  --ssh-key FILE           private key (`-i FILE -o IdentitiesOnly=yes`).
  --ssh-port N             overrides a port given in --host.
  --ssh-strict MODE        StrictHostKeyChecking: `accept-new` (default: a host
                           seen for the first time is recorded in known_hosts,
                           a CHANGED key is refused -- trust on first use),
                           `yes` (the key must already be in known_hosts; the
                           right choice for CI and shared labs: add it with
                           `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts` after
                           checking its fingerprint on the board), or `no`
                           (never checks; only for throwaway boards on a
                           private network, and it also writes to no known_hosts).
  --known-hosts FILE       UserKnownHostsFile to use instead of ~/.ssh/known_hosts.
  --connect-timeout S      ssh ConnectTimeout (default 10 s).
  --no-ssh-mux             a new connection per step (default: one ControlMaster
                           connection, owned and stopped by the target, that every
                           ssh/scp step reuses through a socket in a private temp dir;
                           use this with ssh clients without ControlMaster, e.g. Windows).
Always: -o BatchMode=yes (never a password or passphrase prompt: a key agent or
an unencrypted key must work non-interactively), ServerAliveInterval=15 with
ServerAliveCountMax=3 (a board that drops off the network is noticed within ~45 s).

Time limits: probe 60 s, mktemp/cleanup 30 s, copies 60 s + 4 s per MB, each
model's run --timeout (default 900 s). When a run times out, the runner process
on the board is killed and the temp dir removed; the finished models' results
are kept (PartialResults). The board's login shell must be POSIX (sh, bash,
dash, busybox ash).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .base import (RUNNER_PATH, BenchConfig, BenchError, ModelSpec, RunnerFailed,
                   RuntimeMissing, Target, TargetOptions, TargetUnavailable, check_runner_exit,
                   finish_result, load_result, remote_cleanup_cmd, remote_kill_cmd, run_process,
                   runner_argv)

DEFAULT_CONNECT_TIMEOUT = 10.0
PROBE_TIMEOUT = 60.0
SHORT_TIMEOUT = 30.0
STRICT_MODES = ("accept-new", "yes", "no")
PROBE_MARK = "ARMQ-PROBE "

# Runs on the board: what the runner needs. Kept tiny and Python-3.6 compatible
# (old board images); prints one marked JSON line whatever the login shell echoes.
PROBE_SCRIPT = """\
import json, platform, sys
info = {"python": platform.python_version(), "machine": platform.machine(),
        "executable": sys.executable, "modules": {}}
for name in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"):
    try:
        mod = __import__(name)
        info["modules"][name] = str(getattr(mod, "__version__", "unknown"))
    except Exception as e:
        info["modules"][name] = None
        info.setdefault("errors", {})[name] = type(e).__name__ + ": " + str(e)[:200]
print("%s" + json.dumps(info))
""" % PROBE_MARK

# Which probed module serves which model format (any one of them will do).
RUNTIME_MODULES = {".onnx": ("onnxruntime",), ".tflite": ("ai_edge_litert", "tflite_runtime")}
INSTALL_HINT = {".onnx": "pip install onnxruntime",
                ".tflite": "pip install ai-edge-litert (or tflite-runtime)"}

_SAFE_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


# ---- destination parsing (pure) -------------------------------------------------------

@dataclass(frozen=True)
class SshDestination:
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def ssh_dest(self) -> str:
        """`user@host` for ssh (IPv6 addresses need no brackets there)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def scp_spec(self, remote_path: str) -> str:
        """`user@host:path`, `user@[v6]:path` for scp."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{remote_path}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{f':{self.port}' if self.port else ''}"


def parse_destination(spec: str, port: int | None = None) -> SshDestination:
    """`user@host[:port]`, `host`, `user@[::1]:2222` -> SshDestination.

    Refuses anything ssh could take for an option (a leading '-') or that holds
    shell or ssh-config metacharacters: the host travels on an argv, but a
    value like `-oProxyCommand=...` would still be an option to ssh.
    """
    s = (spec or "").strip()
    if not s:
        raise BenchError("--target ssh needs --host user@board[:port]")
    user = None
    if "@" in s:
        user, s = s.rsplit("@", 1)
        if not _USER.match(user):
            raise BenchError(f"--host {spec!r}: bad user name {user!r}")
    parsed_port = None
    if s.startswith("["):
        m = re.match(r"^\[([0-9A-Fa-f:.%a-zA-Z]+)\](?::(\d+))?$", s)
        if not m:
            raise BenchError(f"--host {spec!r}: write IPv6 addresses as [addr] or [addr]:port")
        host, p = m.group(1), m.group(2)
        parsed_port = int(p) if p else None
    elif s.count(":") == 1:
        host, p = s.split(":")
        if not p.isdigit():
            raise BenchError(f"--host {spec!r}: port {p!r} is not a number")
        parsed_port = int(p)
    elif s.count(":") > 1:
        host = s  # a bare IPv6 address, no port
    else:
        host = s
    if ":" not in host and not _HOSTNAME.match(host):
        raise BenchError(f"--host {spec!r}: {host!r} is not a host name or address")
    final_port = port if port is not None else parsed_port
    if final_port is not None and not 0 < final_port < 65536:
        raise BenchError(f"--host {spec!r}: port {final_port} out of range")
    return SshDestination(host=host, user=user, port=final_port)


def classify_ssh_failure(stderr: str, dest: SshDestination) -> str:
    """One line for an ssh/scp exit 255 (the connection itself failed)."""
    s = (stderr or "").lower()
    where = str(dest)
    if "could not resolve hostname" in s or "name or service not known" in s:
        return f"cannot resolve host {dest.host!r} (check --host)"
    if "connection refused" in s:
        return (f"{where}: connection refused (no sshd listening on port "
                f"{dest.port or 22}; check --host/--ssh-port)")
    if "no route to host" in s or "network is unreachable" in s or "timed out" in s:
        return f"{where} is unreachable (timed out; is the board on and on this network?)"
    if "remote host identification has changed" in s or "host key for" in s and "changed" in s:
        return (f"{where}: the host key CHANGED since it was recorded in known_hosts "
                f"(a reinstalled board, or someone in between); check it, then "
                f"`ssh-keygen -R {dest.host}`")
    if "host key verification failed" in s:
        return (f"{where}: host key not in known_hosts (use --ssh-strict accept-new to "
                f"record it on first use, or add it with ssh-keyscan)")
    if "permission denied" in s or "too many authentication failures" in s:
        return (f"{where}: authentication failed (key not accepted; pass --ssh-key, or "
                f"add your public key to ~/.ssh/authorized_keys on the board)")
    if "connection closed" in s or "connection reset" in s or "broken pipe" in s:
        return f"{where}: connection closed by the board"
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return f"{where}: ssh failed ({lines[-1] if lines else 'no message'})"


def _no_sftp(stderr: str) -> bool:
    s = (stderr or "").lower()
    return ("subsystem request failed" in s or "connection closed" in s) and \
        not any(k in s for k in ("refused", "permission denied", "host key", "timed out"))


def parse_probe(stdout: str) -> dict | None:
    for line in (stdout or "").splitlines():
        if line.startswith(PROBE_MARK):
            try:
                return json.loads(line[len(PROBE_MARK):])
            except json.JSONDecodeError:
                return None
    return None


def missing_runtime(probe: dict, suffix: str) -> str | None:
    """None if the probed board can run a model of this suffix, else what to install."""
    mods = probe.get("modules", {})
    wanted = RUNTIME_MODULES.get(suffix.lower(), ())
    if any(mods.get(m) for m in wanted):
        return None
    return INSTALL_HINT.get(suffix.lower(), "a runtime")


# ---- the target ---------------------------------------------------------------------------

class SshTarget(Target):
    kind = "ssh"
    emulated = False
    default_timeout_s = 900.0

    def __init__(self, dest: SshDestination, *, key: str | None = None, strict: str = "accept-new",
                 known_hosts: str | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 python: str = "python3", remote_dir: str | None = None,
                 ssh: str = "ssh", scp: str = "scp", extra_ssh_options: Sequence[str] = (),
                 multiplex: bool = True):
        if strict not in STRICT_MODES:
            raise BenchError(f"--ssh-strict must be one of {', '.join(STRICT_MODES)}")
        if key is not None and not Path(key).expanduser().is_file():
            raise BenchError(f"--ssh-key {key}: no such file")
        if known_hosts is not None and not Path(known_hosts).expanduser().parent.is_dir():
            raise BenchError(f"--known-hosts {known_hosts}: its folder does not exist")
        if connect_timeout <= 0:
            raise BenchError("--connect-timeout must be positive")
        if not python or python.startswith("-"):
            raise BenchError(f"bad remote python {python!r}")
        if remote_dir is not None and not _SAFE_REMOTE_PATH.match(remote_dir):
            raise BenchError(f"--remote-dir {remote_dir!r}: use an absolute path of plain characters")
        self.dest = dest
        self.key = str(Path(key).expanduser()) if key else None
        self.strict = strict
        self.known_hosts = str(Path(known_hosts).expanduser()) if known_hosts else None
        self.connect_timeout = float(connect_timeout)
        self.python = python
        self.remote_dir = remote_dir
        self.ssh_prog, self.scp_prog = ssh, scp
        self.extra_ssh_options = list(extra_ssh_options)
        self.probe_info: dict | None = None
        self.scp_legacy = False              # scp -O once SFTP turned out to be missing
        self.tmp: str | None = None          # remote temp dir of the current run()
        self.last_tmp: str | None = None     # ... kept after cleanup, for tests and logs
        self._inputs_remote: str | None = None
        self._n = 0
        self.log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
        self.multiplex = multiplex
        self._master: subprocess.Popen | None = None   # our ControlMaster ssh process
        self._cm_dir: str | None = None
        self._finalizer: weakref.finalize | None = None

    # ---- command lines (pure; tested without a network) ----

    def _common_options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(round(self.connect_timeout))}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
                "-o", f"StrictHostKeyChecking={self.strict}"]
        if self.strict == "no":
            opts += ["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        elif self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.key:
            opts += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self._cm_dir and self._master is not None and self._master.poll() is None:
            # through our master connection: no new TCP handshake and authentication
            opts += ["-o", "ControlMaster=no", "-o", f"ControlPath={self._cm_path}"]
        opts += self.extra_ssh_options
        return opts

    @property
    def _cm_path(self) -> str:
        return os.path.join(self._cm_dir or "", "cm")

    def ssh_argv(self, remote_command: str) -> list[str]:
        argv = [self.ssh_prog, *self._common_options()]
        if self.dest.port:
            argv += ["-p", str(self.dest.port)]
        return argv + ["-T", "--", self.dest.ssh_dest, remote_command]

    def scp_argv(self, sources: Sequence[str], target: str) -> list[str]:
        argv = [self.scp_prog, "-q", *(["-O"] if self.scp_legacy else []), *self._common_options()]
        if self.dest.port:
            argv += ["-P", str(self.dest.port)]
        return argv + ["--", *sources, target]

    def describe(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "emulated": self.emulated,
                             "host": self.dest.host, "user": self.dest.user,
                             "port": self.dest.port, "python": self.python}
        if self.probe_info:
            d["board"] = {k: self.probe_info.get(k) for k in ("machine", "python", "executable")}
            d["board"]["modules"] = self.probe_info.get("modules", {})
        return d

    # ---- transport ----

    def connect(self) -> None:
        """Open one authenticated connection (an ssh ControlMaster this object owns) that
        every later ssh/scp reuses: a board over Wi-Fi costs one handshake, not ten.
        Unreachable host, refused port, failed authentication or host-key trouble
        surface here as one TargetUnavailable line."""
        if not self.multiplex or (self._master is not None and self._master.poll() is None):
            return
        self.close()
        self._cm_dir = tempfile.mkdtemp(prefix="armq-ssh-")
        err_path = os.path.join(self._cm_dir, "master.err")
        argv = [self.ssh_prog, *self._common_options(), "-M", "-N", "-o", "ControlPersist=no",
                "-o", f"ControlPath={self._cm_path}"]
        if self.dest.port:
            argv += ["-p", str(self.dest.port)]
        argv += ["--", self.dest.ssh_dest]
        with open(err_path, "w") as err:
            try:
                self._master = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=err,
                                                start_new_session=True)
            except FileNotFoundError:
                self.close()
                raise TargetUnavailable(f"{self.ssh_prog} not found (install OpenSSH's client: "
                                        f"apt-get install openssh-client)") from None
        self._finalizer = weakref.finalize(self, _stop_master, self._master, self._cm_dir)
        deadline = time.monotonic() + self.connect_timeout + 15
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                with open(err_path, errors="replace") as f:
                    text = f.read()
                self.close()
                raise TargetUnavailable(classify_ssh_failure(text, self.dest))
            if os.path.exists(self._cm_path):   # created once authenticated
                return
            time.sleep(0.05)
        self.close()
        raise TargetUnavailable(f"{self.dest} is unreachable (no ssh session after "
                                f"{self.connect_timeout + 15:.0f} s)")

    def close(self) -> None:
        """Stop the master connection (if any). Never raises."""
        if self._finalizer is not None:
            self._finalizer()           # runs _stop_master once
            self._finalizer = None
        elif self._cm_dir:
            shutil.rmtree(self._cm_dir, ignore_errors=True)
        self._master, self._cm_dir = None, None

    def _ssh(self, remote_command: str, timeout: float, what: str,
             on_timeout: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        try:
            p = run_process(self.ssh_argv(remote_command), timeout, what=f"{what} on {self.dest}",
                            on_timeout=on_timeout)
        except RunnerFailed as e:  # RunnerTimeout: the transport hung, not a model
            if on_timeout is None:
                raise TargetUnavailable(str(e)) from None
            raise
        if p.returncode == 255:
            raise TargetUnavailable(classify_ssh_failure(p.stderr, self.dest))
        return p

    def _scp(self, sources: Sequence[str], target: str, what: str) -> None:
        size = sum(Path(s).stat().st_size for s in sources if Path(s).is_file())
        timeout = 60.0 + 4.0 * size / 1e6
        try:
            p = run_process(self.scp_argv(sources, target), timeout, what=f"{what} ({self.dest})")
        except RunnerFailed as e:
            raise TargetUnavailable(str(e)) from None
        if p.returncode != 0 and not self.scp_legacy and _no_sftp(p.stderr):
            # OpenSSH >= 9 scp speaks SFTP; boards without an sftp server (Dropbear,
            # a trimmed sshd_config) need the legacy protocol. Our remote paths are
            # mktemp output and fixed names, safe for the remote shell it involves.
            self.scp_legacy = True
            p = run_process(self.scp_argv(sources, target), timeout, what=f"{what} ({self.dest})")
        if p.returncode != 0:
            if p.returncode == 255 and any(k in p.stderr.lower() for k in (
                    "refused", "unreachable", "timed out", "permission denied", "host key",
                    "resolve")):
                raise TargetUnavailable(classify_ssh_failure(p.stderr, self.dest))
            lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip()]
            raise TargetUnavailable(f"{what} failed ({self.dest}): "
                                    f"{lines[-1] if lines else f'scp exit {p.returncode}'}")

    def probe(self) -> dict:
        """Ask the board what it has; one line if python3/numpy are missing.
        (Leaves the master connection open: run() closes it, or call close().)"""
        self.say(f"    ssh {self.dest}: connecting and probing {self.python}")
        self.connect()
        cmd = f"{shlex.quote(self.python)} -c {shlex.quote(PROBE_SCRIPT)}"
        p = self._ssh(cmd, PROBE_TIMEOUT, "probe")
        info = parse_probe(p.stdout)
        if info is None:
            err = (p.stderr or "").lower()
            if p.returncode == 127 or "not found" in err or "no such file" in err:
                raise TargetUnavailable(
                    f"{self.dest}: no {self.python!r} on the board (install python3, or "
                    f"name the interpreter with --python)")
            lines = [ln.strip() for ln in (p.stderr or "").splitlines() if ln.strip()]
            raise TargetUnavailable(f"{self.dest}: {self.python} -c failed "
                                    f"(exit {p.returncode}: {lines[-1] if lines else 'no output'})")
        if not info.get("modules", {}).get("numpy"):
            raise TargetUnavailable(f"{self.dest}: numpy is missing for {self.python} on the "
                                    f"board (pip install numpy there)")
        self.probe_info = info
        return info

    def check(self) -> None:
        if self.probe_info is None:
            self.probe()

    def _start_session(self) -> str:
        base = self.remote_dir or None
        template = (f"{shlex.quote(base)}/armq-bench.XXXXXX" if base
                    else '"${TMPDIR:-/tmp}"/armq-bench.XXXXXX')
        p = self._ssh(f"mktemp -d {template}", SHORT_TIMEOUT, "mktemp")
        tmp = p.stdout.strip().splitlines()[-1].strip() if p.stdout.strip() else ""
        if p.returncode != 0 or not _SAFE_REMOTE_PATH.match(tmp):
            raise TargetUnavailable(f"{self.dest}: cannot make a temp dir "
                                    f"({(p.stderr or p.stdout).strip()[:200] or 'mktemp failed'})")
        self.tmp = self.last_tmp = tmp
        self.say(f"    ssh {self.dest}: working in {tmp}")
        self._scp([str(RUNNER_PATH)], self.dest.scp_spec(f"{tmp}/runner.py"), "copying runner.py")
        return tmp

    def cleanup(self) -> bool:
        """Remove the remote temp dir; True if it is gone. Never raises."""
        if not self.tmp:
            return True
        tmp, self.tmp, self._inputs_remote = self.tmp, None, None
        try:
            p = self._ssh(remote_cleanup_cmd(tmp), SHORT_TIMEOUT, "cleanup")
            if p.returncode == 0:
                return True
            msg = (p.stderr or "").strip().splitlines()
            self.log(f"android_bench: warning: could not remove {tmp} on {self.dest}: "
                     f"{msg[-1] if msg else p.returncode}")
        except BenchError as e:
            self.log(f"android_bench: warning: could not remove {tmp} on {self.dest}: {e}")
        return False

    def _kill_remote(self, pidfile: str) -> None:
        try:
            self._ssh(remote_kill_cmd(pidfile), SHORT_TIMEOUT, "stopping the hung runner")
        except BenchError:
            pass

    # ---- the Target interface ----

    def run(self, model_paths, config: BenchConfig, progress=None) -> list[dict]:
        try:
            return super().run(model_paths, config, progress)
        finally:
            try:
                self.cleanup()
            finally:
                self.close()

    def run_model(self, model: ModelSpec, config: BenchConfig) -> dict:
        if self.probe_info is None:
            self.probe()
        if config.runtime == "auto":
            need = missing_runtime(self.probe_info, model.path.suffix)
            if need:
                raise RuntimeMissing(f"{model.name} on {self.dest}: no runtime for "
                                     f"{model.path.suffix} models with {self.python} "
                                     f"({need} on the board)")
        tmp = self.tmp or self._start_session()
        i = self._n
        self._n += 1
        mdir = f"{tmp}/m{i}"
        p = self._ssh(f"mkdir -p {shlex.quote(mdir)}", SHORT_TIMEOUT, "mkdir")
        if p.returncode != 0:
            raise TargetUnavailable(f"{self.dest}: cannot create {mdir}")
        sources = [str(model.path)] + ([str(model.card)] if model.card else [])
        self._scp(sources, self.dest.scp_spec(mdir + "/"), f"copying {model.name}")
        if config.inputs and self._inputs_remote is None:
            self._scp([str(Path(config.inputs).resolve())],
                      self.dest.scp_spec(f"{tmp}/inputs.npy"), "copying inputs")
            self._inputs_remote = f"{tmp}/inputs.npy"
        result_remote = f"m{i}/result.json"
        outputs_remote = f"m{i}/outputs.npy" if config.save_outputs else None
        argv = runner_argv(config, f"m{i}/{model.path.name}",
                           card=f"m{i}/{model.card.name}" if model.card else None,
                           json_out=result_remote,
                           inputs="inputs.npy" if self._inputs_remote else None,
                           outputs_npy=outputs_remote)
        # The runner runs as a background job so that its pid can be recorded (for a
        # kill after a timeout) and the pid file removed as soon as it ends.
        remote = (f"cd {shlex.quote(tmp)} && {{ {shlex.quote(self.python)} runner.py "
                  f"{shlex.join(argv)} & echo $! > m{i}/pid; wait $!; rc=$?; rm -f m{i}/pid; "
                  f"exit $rc; }}")
        where = f"ssh {self.dest}"
        self.say(f"    running {model.name} on {self.dest}")
        p = self._ssh(remote, self.timeout_for(config), f"{model.name}",
                      on_timeout=lambda: self._kill_remote(f"{tmp}/m{i}/pid"))
        check_runner_exit(p.returncode, p.stderr, model.name, where)
        with tempfile.TemporaryDirectory(prefix="armq-ssh-") as local:
            self._scp([self.dest.scp_spec(f"{tmp}/{result_remote}")], local,
                      f"fetching the result of {model.name}")
            raw = load_result(Path(local) / "result.json", model.name, where)
            if outputs_remote:
                out_dir = Path(config.out_dir or ".")
                out_dir.mkdir(parents=True, exist_ok=True)
                dst = out_dir / f"{model.path.name}.outputs.npy"
                self._scp([self.dest.scp_spec(f"{tmp}/{outputs_remote}")], str(dst),
                          f"fetching the outputs of {model.name}")
        return finish_result(raw, self.describe(), model)


def _stop_master(proc: subprocess.Popen, cm_dir: str) -> None:
    """End our ControlMaster ssh (and only it: its own process group) and its socket dir."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    except (OSError, subprocess.SubprocessError):
        pass
    shutil.rmtree(cm_dir, ignore_errors=True)


# ---- factory and CLI options -------------------------------------------------------------

def add_arguments(parser) -> None:
    """The ssh options, for android_bench's CLI to add to its parser."""
    g = parser.add_argument_group("ssh target")
    g.add_argument("--ssh-key", help="private key file for ssh (-i)")
    g.add_argument("--ssh-port", type=int, help="ssh port (default: from --host, else 22)")
    g.add_argument("--ssh-strict", choices=STRICT_MODES, default="accept-new",
                   help="StrictHostKeyChecking (default accept-new: trust on first use, "
                        "refuse a changed key)")
    g.add_argument("--known-hosts", help="known_hosts file to use instead of ~/.ssh/known_hosts")
    g.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
                   help="seconds to wait for the ssh connection (default 10)")
    g.add_argument("--no-ssh-mux", action="store_true", default=None,
                   help="open a new ssh connection per step instead of one shared "
                        "ControlMaster connection")


def make_target(options: TargetOptions) -> SshTarget:
    x = options.extra or {}
    dest = parse_destination(options.host or "", x.get("ssh_port"))
    return SshTarget(dest, key=x.get("ssh_key"), strict=x.get("ssh_strict") or "accept-new",
                     known_hosts=x.get("known_hosts"),
                     connect_timeout=float(x.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT),
                     python=options.python or "python3", remote_dir=options.remote_dir,
                     extra_ssh_options=x.get("ssh_options") or (),
                     multiplex=not x.get("no_ssh_mux"))
