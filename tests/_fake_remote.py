"""Stand-in `adb`, `ssh` and `scp` for tests: the "phone" or "board" is this machine.

adb: `shell` runs the command line in the local sh (with a stand-in `getprop` on PATH),
push/pull are copies. ssh: the remote command runs in the local sh; the master
connection (-M) is a process that creates its ControlPath and waits to be stopped;
a host whose name starts with "down" is refused as a real ssh would (exit 255,
"Connection refused"). scp: copies, with the `host:` part of remote specs dropped.
$FAKE_CPUINFO (adb): a file that stands for the phone's /proc/cpuinfo.
Every call is appended to $FAKE_REMOTE_LOG when that is set (tests read the argv).

NOT covered by these: a real phone or board, real transports, Android's mksh/toybox.
"""
from __future__ import annotations

import sys
from pathlib import Path

FAKE_ADB = r'''#!{python}
"""Stand-in adb (tests only): shell -> local sh, push/pull -> copies."""
import os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ.get("FAKE_ADB_LOG") or os.environ.get("FAKE_REMOTE_LOG") or os.devnull, "a") as f:
    f.write(repr(["adb", *args]) + "\n")
if args[:1] == ["-s"]:
    args = args[2:]
state = os.environ.get("FAKE_ADB_STATE", "device")
if state != "device":
    print(state, file=sys.stderr)
    sys.exit(1)
cmd, rest = args[0], args[1:]
if cmd == "get-state":
    print("device")
elif cmd == "shell":
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PATH=here + ":" + os.environ["PATH"])
    line = " ".join(rest)
    if os.environ.get("FAKE_CPUINFO"):      # the phone's CPU, not this machine's
        line = line.replace("/proc/cpuinfo", os.environ["FAKE_CPUINFO"])
    sys.exit(subprocess.run(["sh", "-c", line], env=env).returncode)
elif cmd in ("push", "pull"):
    if not os.path.exists(rest[0]):
        print(f"adb: error: failed to stat {rest[0]}: No such file or directory", file=sys.stderr)
        sys.exit(1)
    shutil.copy(rest[0], rest[1])
    print("1 file " + cmd + "ed")
else:
    sys.exit("fake adb: unsupported " + cmd)
'''

FAKE_GETPROP = """#!/bin/sh
case "$1" in
  ro.product.model) echo "Fake Phone 1";;
  ro.product.manufacturer) echo "Armq";;
  ro.build.version.release) echo "14";;
  ro.build.version.sdk) echo "34";;
  ro.product.cpu.abi) echo "arm64-v8a";;
  *) echo "";;
esac
"""

FAKE_SSH = r'''#!{python}
"""Stand-in ssh (tests only): ssh [options] -T -- DEST COMMAND runs COMMAND in the local sh."""
import os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ.get("FAKE_REMOTE_LOG") or os.devnull, "a") as f:
    f.write(repr(["ssh", *args]) + "\n")
if "--" not in args:
    sys.exit("fake ssh: expected -- DEST [COMMAND]")
i = args.index("--")
opts, dest, command = args[:i], args[i + 1], args[i + 2:]
host = dest.rsplit("@", 1)[-1]
if host.startswith("down"):
    print(f"ssh: connect to host {host} port 22: Connection refused", file=sys.stderr)
    sys.exit(255)
if "-M" in opts:    # the master connection: its control socket is what ssh waits for
    path = next(o.split("=", 1)[1] for o in opts if o.startswith("ControlPath="))
    open(path, "w").close()
    time.sleep(3600)
    sys.exit(0)
sys.exit(subprocess.run(["sh", "-c", " ".join(command)]).returncode)
'''

FAKE_SCP = r'''#!{python}
"""Stand-in scp (tests only): scp [options] -- SOURCES... TARGET as local copies."""
import os, re, shutil, sys
args = sys.argv[1:]
with open(os.environ.get("FAKE_REMOTE_LOG") or os.devnull, "a") as f:
    f.write(repr(["scp", *args]) + "\n")
rest = args[args.index("--") + 1:]
remote = re.compile(r"^[^/]*:")
for spec in rest:
    m = remote.match(spec)
    if m and m.group(0)[:-1].rsplit("@", 1)[-1].startswith("down"):
        print("ssh: connect to host down port 22: Connection refused", file=sys.stderr)
        sys.exit(255)
srcs, target = [remote.sub("", s) for s in rest[:-1]], remote.sub("", rest[-1])
for s in srcs:
    if not os.path.exists(s):
        print(f"scp: {s}: No such file or directory", file=sys.stderr)
        sys.exit(1)
    shutil.copy(s, os.path.join(target, os.path.basename(s)) if os.path.isdir(target) else target)
'''


def _install(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("{python}", sys.executable))
    path.chmod(0o755)
    return path


def install_fake_adb(bin_dir: Path) -> Path:
    """`adb` (and the `getprop` its shell finds) in bin_dir; returns the adb path."""
    _install(bin_dir / "getprop", FAKE_GETPROP)
    return _install(bin_dir / "adb", FAKE_ADB)


def install_fake_ssh(bin_dir: Path) -> Path:
    """`ssh` and `scp` in bin_dir; returns the ssh path."""
    _install(bin_dir / "scp", FAKE_SCP)
    return _install(bin_dir / "ssh", FAKE_SSH)
