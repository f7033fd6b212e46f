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

Steps 1-6 are RemoteTarget's (remote.py), shared with the adb target; this
module is the transport: `ssh` for the shell, `scp` for copies, and one shared
connection. Every command is an argument list (never shell=True on this side);
everything interpolated into the one remote shell command line is quoted with
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

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .base import BenchError, TargetOptions, TargetUnavailable, last_line
# The probe and its parsing live in remote.py (adb uses them too); importable from here.
from .remote import (INSTALL_HINT, PROBE_MARK, PROBE_SCRIPT, PROBE_TIMEOUT,  # noqa: F401
                     RUNTIME_MODULES, SHORT_TIMEOUT, RemoteTarget, copy_timeout, missing_runtime,
                     parse_probe)

DEFAULT_CONNECT_TIMEOUT = 10.0


def armq_known_hosts() -> Path:
    """Where the boards of a device inventory have their host keys recorded: armq's own state
    folder ($XDG_STATE_HOME/armq, else ~/.local/state/armq), never a file the inventory names
    (a device file is data, and ssh accept-new appends to this file); `deploy --known-hosts`
    chooses another."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "armq" / "known_hosts"
STRICT_MODES = ("accept-new", "yes", "no")

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


# ---- the target ---------------------------------------------------------------------------

class SshTarget(RemoteTarget):
    kind = "ssh"
    tmp_prefix = "armq-bench"
    device_word = "board"

    def __init__(self, dest: SshDestination, *, key: str | None = None, strict: str = "accept-new",
                 known_hosts: str | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 python: str = "python3", remote_dir: str | None = None,
                 ssh: str = "ssh", scp: str = "scp", extra_ssh_options: Sequence[str] = (),
                 multiplex: bool = True):
        if strict not in STRICT_MODES:
            raise BenchError(f"--ssh-strict must be one of {', '.join(STRICT_MODES)}")
        if key is not None and not Path(key).expanduser().is_file():
            raise BenchError(f"--ssh-key {key}: no such file")
        if known_hosts is not None and Path(known_hosts) == armq_known_hosts():
            armq_known_hosts().parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # first use
        if known_hosts is not None and not Path(known_hosts).expanduser().parent.is_dir():
            raise BenchError(f"--known-hosts {known_hosts}: its folder does not exist")
        if connect_timeout <= 0:
            raise BenchError("--connect-timeout must be positive")
        super().__init__(python or "", remote_dir)
        self.dest = dest
        self.key = str(Path(key).expanduser()) if key else None
        self.strict = strict
        self.known_hosts = str(Path(known_hosts).expanduser()) if known_hosts else None
        self.connect_timeout = float(connect_timeout)
        self.ssh_prog, self.scp_prog = ssh, scp
        self.extra_ssh_options = list(extra_ssh_options)
        self.scp_legacy = False              # scp -O once SFTP turned out to be missing
        self.multiplex = multiplex
        self._master: subprocess.Popen | None = None   # our ControlMaster ssh process
        self._cm_dir: str | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def place(self) -> str:
        return f"ssh {self.dest}"

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

    # ---- the connection ----

    def connect(self) -> None:
        """Open one authenticated connection (an ssh ControlMaster this object owns) that
        every later ssh/scp reuses: a board over Wi-Fi costs one handshake, not ten.
        Unreachable host, refused port, failed authentication or host-key trouble
        surface here as one TargetUnavailable line."""
        if not self.multiplex or (self._master is not None and self._master.poll() is None):
            return
        self.close()
        self._cm_dir = control_dir()
        if self._cm_dir is None:    # no folder with a short enough path: plain connections
            self.multiplex = False
            return
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

    # ---- the transport ----

    def shell(self, command: str, timeout: float = SHORT_TIMEOUT, what: str = "ssh",
              on_timeout: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        p = self._call(self.ssh_argv(command), timeout, f"{what} on {self.dest}", on_timeout)
        if p.returncode == 255:         # ssh's own failure, not the command's
            raise TargetUnavailable(classify_ssh_failure(p.stderr, self.dest))
        return p

    def push(self, local: str | Path, remote: str, what: str) -> None:
        self._scp([str(local)], self.dest.scp_spec(remote), what)

    def push_into(self, files: Sequence[Path], remote_dir: str, what: str) -> None:
        # one scp for all of them: one round trip (and one connection without -mux)
        self._scp([str(f) for f in files], self.dest.scp_spec(remote_dir + "/"), what)

    def pull(self, remote: str, local: str | Path, what: str, model: str) -> None:
        self._scp([self.dest.scp_spec(remote)], str(local), what)

    def _scp(self, sources: Sequence[str], target: str, what: str) -> None:
        size = sum(Path(s).stat().st_size for s in sources if Path(s).is_file())
        timeout = copy_timeout(size)
        p = self._call(self.scp_argv(sources, target), timeout, f"{what} ({self.dest})")
        if p.returncode != 0 and not self.scp_legacy and _no_sftp(p.stderr):
            # OpenSSH >= 9 scp speaks SFTP; boards without an sftp server (Dropbear,
            # a trimmed sshd_config) need the legacy protocol. Our remote paths are
            # mktemp output and fixed names, safe for the remote shell it involves.
            self.scp_legacy = True
            p = self._call(self.scp_argv(sources, target), timeout, f"{what} ({self.dest})")
        if p.returncode != 0:
            if p.returncode == 255 and any(k in p.stderr.lower() for k in (
                    "refused", "unreachable", "timed out", "permission denied", "host key",
                    "resolve")):
                raise TargetUnavailable(classify_ssh_failure(p.stderr, self.dest))
            raise TargetUnavailable(f"{what} failed ({self.dest}): "
                                    f"{last_line(p.stderr) or f'scp exit {p.returncode}'}")

    # ---- the session ----

    def probe(self) -> dict:
        """Ask the board what it has; one line if python3/numpy are missing.
        (Leaves the master connection open: run() closes it, or call close().)"""
        self.say(f"    ssh {self.dest}: connecting and probing {self.python}")
        self.connect()
        return super().probe()


# ssh binds its ControlPath socket as the path plus a 17-character suffix (".XXXXXXXXXXXXXXXX")
# and renames it; a unix socket's path holds at most 107 bytes. A long TMPDIR (80 characters
# is enough) made every ssh step fail with "path too long for Unix domain socket".
MAX_CONTROL_PATH = 107 - 17


def control_dir(bases: Sequence[str | None] = (None, "/tmp")) -> str | None:
    """A new private folder for the ControlMaster socket: in the temp folder when the
    socket's path fits there, else in /tmp; None when neither works (then no multiplexing)."""
    for base in bases:
        try:
            d = tempfile.mkdtemp(prefix="armq-ssh-", dir=base)
        except OSError:
            continue
        if len(os.fsencode(os.path.join(d, "cm"))) <= MAX_CONTROL_PATH:
            return d
        os.rmdir(d)
    return None


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
