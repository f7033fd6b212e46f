"""Lint of docker/Dockerfile.arm64 and docker/run.sh (no Docker daemon needed).

hadolint is not packaged for Debian/PyPI, so the Dockerfile is parsed here and the
rules that matter for this image are checked: an arm64 platform on FROM, a tagged
base that is not `latest`, the runtime pins equal to the QEMU target's, the runner
copied in and used as the entrypoint, a non-root user, a .dockerignore that sends
only what is copied. run.sh gets `bash -n`, shellcheck when installed (Debian
package shellcheck), and runs against a stand-in `docker` script that records its
arguments -- the real image is NOT built or run by this test.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile.arm64"
RUN_SH = ROOT / "docker" / "run.sh"
REQS = ROOT / "android_bench" / "device_requirements.txt"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def requirement_pins() -> list[str]:
    return [ln.strip() for ln in REQS.read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfile_from_is_arm64_tagged_and_not_latest():
    ins = instructions(DOCKERFILE.read_text())
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 1
    args = froms[0].split()
    assert "--platform=linux/arm64" in args
    image = [a for a in args if not a.startswith("--")][0]
    name, _, tag = image.partition(":")
    assert name == "python" and tag.startswith("3.11-slim-bookworm")
    assert "latest" not in DOCKERFILE.read_text().lower()


def test_pins_equal_the_qemu_targets():
    pins = requirement_pins()
    assert pins and all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.]*", p) for p in pins)
    from android_bench import qemu_setup
    assert sorted(pins) == sorted(qemu_setup.WHEELS_LITERT)


def test_dockerfile_installs_the_pins_and_copies_the_runner():
    ins = instructions(DOCKERFILE.read_text())
    copies = [a.split() for i, a in ins if i == "COPY"]
    sources = {c[0]: c[1] for c in copies}
    assert sources.get("android_bench/runner.py") == "/opt/armq/runner.py"
    assert "android_bench/device_requirements.txt" in sources
    for src in sources:
        assert (ROOT / src).is_file(), src
    req_in_image = sources["android_bench/device_requirements.txt"]
    runs = [a for i, a in ins if i == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert len(pip) == 1 and f"-r {req_in_image}" in pip[0]
    assert "--no-cache-dir" in pip[0] and "--only-binary=:all:" in pip[0]
    assert not any("apt-get" in r for r in runs)              # nothing unpinned from apt
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[0]) == ["python3", "/opt/armq/runner.py"]
    user = [a for i, a in ins if i == "USER"]
    assert user and user[-1] not in ("root", "0")
    # the runner's imports are covered by the image: stdlib + numpy + the runtimes
    names = {p.split("==")[0] for p in requirement_pins()}
    assert {"numpy", "onnxruntime", "ai-edge-litert"} <= names


def test_dockerignore_sends_only_what_is_copied():
    ign = (ROOT / "docker" / "Dockerfile.arm64.dockerignore").read_text().splitlines()
    lines = [ln.strip() for ln in ign if ln.strip() and not ln.strip().startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:] for ln in lines[1:] if ln.startswith("!")}
    ins = instructions(DOCKERFILE.read_text())
    assert {a.split()[0] for i, a in ins if i == "COPY"} <= allowed


def test_run_sh_syntax_and_shellcheck():
    subprocess.run(["bash", "-n", str(RUN_SH)], check=True, timeout=30)
    assert os.access(RUN_SH, os.X_OK)
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    p = subprocess.run(["shellcheck", str(RUN_SH)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout


def _path_with(tmp_path: Path, with_docker: bool) -> str:
    """A PATH holding only the tools run.sh uses (and a recording `docker` stand-in)."""
    bin_ = tmp_path / ("bin_docker" if with_docker else "bin_nodocker")
    bin_.mkdir()
    for tool in ("bash", "basename", "dirname", "sed", "mkdir", "id", "uname", "cat", "env"):
        where = shutil.which(tool)
        assert where, tool
        (bin_ / tool).symlink_to(where)
    if with_docker:
        log = tmp_path / "docker.log"
        fake = bin_ / "docker"
        fake.write_text("#!/bin/sh\n"
                        f"for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {shlex.quote(str(log))}.\"$1\"\n"
                        "exit 0\n")
        fake.chmod(0o755)
    return str(bin_)


def test_run_sh_builds_the_docker_run_command(tmp_path):
    models = tmp_path / "my models"
    models.mkdir()
    (models / "net.int8.onnx").write_bytes(b"x")
    (models / "net.json").write_text("{}")
    env = {"PATH": _path_with(tmp_path, True), "ARMQ_OUT": str(tmp_path / "out"),
           "HOME": str(tmp_path)}
    p = subprocess.run(["bash", str(RUN_SH), str(models / "net.int8.onnx"), "--threads", "2",
                        "--runs", "7"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    argv = (tmp_path / "docker.log.run").read_text().splitlines()
    assert argv[:4] == ["run", "--rm", "--platform", "linux/arm64"]
    assert f"{models}:/models:ro" in argv and f"{tmp_path / 'out'}:/out" in argv
    i = argv.index("armq-runner:arm64")
    assert argv[i + 1:] == ["--model", "/models/net.int8.onnx", "--card", "/models/net.json",
                            "--json", "/out/net.int8.onnx.docker.json", "--threads", "2",
                            "--runs", "7"]
    # the image did not exist for the stand-in? it answered inspect with 0, so no build
    assert not (tmp_path / "docker.log.build").exists()
    if os.uname().machine not in ("aarch64", "arm64"):
        assert "emulated" in p.stderr


def test_run_sh_errors_are_one_line(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    env = {"PATH": _path_with(tmp_path, False), "HOME": str(tmp_path),
           "ARMQ_OUT": str(tmp_path / "out")}
    p = subprocess.run(["bash", str(RUN_SH), str(tmp_path / "m.onnx")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "docker not found" in p.stderr
    p = subprocess.run(["bash", str(RUN_SH), str(tmp_path / "absent.onnx")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 2 and "not found" in p.stderr
    (tmp_path / "m.txt").write_text("x")
    p = subprocess.run(["bash", str(RUN_SH), str(tmp_path / "m.txt")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 2 and "not an .onnx or .tflite" in p.stderr
    p = subprocess.run(["bash", str(RUN_SH)], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "docker/run.sh MODEL" in p.stdout
