"""Packaging, checked without building: every package is listed in pyproject.toml, every
file the code reads beside its modules is package data, and the `armq` command dispatches.

The real check -- build the wheel, install it into a fresh venv, run a short pipeline from
a temp dir -- is scripts/install_check.sh (.ci/run runs it after the suite; minutes).
"""
from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
TOP = ("armq", "zoo", "export", "quant", "android_bench", "deploy")


def _package_dirs() -> set[str]:
    out = set()
    for top in TOP:
        for init in (REPO / top).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                out.add(".".join(init.parent.relative_to(REPO).parts))
    return out


def test_every_package_is_listed():
    listed = set(SETUPTOOLS["packages"])
    assert _package_dirs() - listed == set(), "packages missing from [tool.setuptools] packages"
    assert listed - _package_dirs() == set(), "listed packages that do not exist"


def _is_package_data(pkg: str, rel: str) -> bool:
    data = SETUPTOOLS["package-data"]
    return any(fnmatch.fnmatch(rel, pat) for pat in data.get(pkg, []) + data.get("*", []))


def test_non_python_files_beside_the_code_are_package_data():
    """A file inside a package that is not Python is read at run time (plugin source,
    device requirements, sweep files, synsets): it must travel in the wheel."""
    missing = []
    for pkg in SETUPTOOLS["packages"]:
        d = REPO / pkg.replace(".", "/")
        for f in d.iterdir():
            if f.is_file() and f.suffix not in (".py", ".pyc"):
                if not _is_package_data(pkg, f.name):
                    missing.append(str(f.relative_to(REPO)))
        for sub in d.iterdir():  # data folders (no __init__.py), e.g. android_bench/qemu_plugin
            if sub.is_dir() and not sub.is_symlink() and not (sub / "__init__.py").exists() \
                    and sub.name != "__pycache__":
                for f in sub.rglob("*"):
                    if f.is_file() and not _is_package_data(pkg, str(f.relative_to(d))):
                        missing.append(str(f.relative_to(REPO)))
    assert not missing, f"not package data (not in the wheel): {missing}"


def test_shipped_assets_in_the_wheel_exist_and_are_small():
    """armq/assets -> ../assets; the wheel takes only the files named in package-data."""
    import armq

    assert (REPO / "armq" / "assets").resolve() == (REPO / "assets").resolve()
    assert armq.assets_dir().resolve() == (REPO / "assets").resolve()
    pats = [p for p in SETUPTOOLS["package-data"]["armq"] if p.startswith("assets/")]
    files = [f for p in pats for f in (REPO / "armq").glob(p)]
    assert len(files) == len(pats), "an armq asset named in package-data does not exist"
    assert sum(f.stat().st_size for f in files) < 10 * 2**20
    assert not any(fnmatch.fnmatch("weights/x.pt", p.removeprefix("assets/")) and "*" in p
                   for p in pats), "a wildcard would put every checkpoint into the wheel"


def test_license_and_typed_markers():
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    for top in TOP:
        assert (REPO / top / "py.typed").is_file(), top


def test_pytest_is_not_a_runtime_dependency():
    deps = PYPROJECT["project"]["dependencies"]
    assert not [d for d in deps if d.lower().startswith(("pytest", "hypothesis"))]
    assert any(d.startswith("pytest") for d in PYPROJECT["project"]["optional-dependencies"]["dev"])


def test_console_script_points_at_an_entry():
    from armq import cli

    mod, _, fn = PYPROJECT["project"]["scripts"]["armq"].partition(":")
    assert mod == "armq.cli" and callable(getattr(cli, fn))


def _armq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "armq", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_armq_version_help_and_unknown():
    r = _armq("--version")
    assert r.returncode == 0 and r.stdout.startswith("armq "), r.stderr
    r = _armq("--help")
    assert r.returncode == 0 and "export-onnx" in r.stdout and "python -m quant.ptq" in r.stdout
    r = _armq("nope")
    assert r.returncode == 2 and r.stderr.startswith("armq: error: unknown command 'nope'")


def test_every_armq_command_has_a_main():
    import importlib

    from armq.cli import COMMANDS, MAIN_MODULE

    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(MAIN_MODULE.get(module, module))
        assert callable(getattr(mod, "main", None)), f"armq {name}: {module} has no main(argv)"


@pytest.mark.parametrize("args", [("list",), ("zoo.list",)])
def test_armq_list_is_zoo_list(args):
    r = _armq(*args)
    ref = subprocess.run([sys.executable, "-m", "zoo.list"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert r.returncode == 0 and r.stdout == ref.stdout and "shufflenet_v1" in r.stdout


def test_armq_error_is_one_line_with_the_subcommand(tmp_path):
    r = _armq("export-onnx", "--model", "no_such_model", "--out", str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("armq export-onnx: error: "), r.stderr
