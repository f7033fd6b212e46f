"""Where the ExecuTorch venv's Python is, and running armq modules with it.

ExecuTorch 1.5.1 pulls ~340 MB of dependencies and upgrades typing_extensions past
what the main venv's packages accept, so it lives in its own venv (`make
venv-executorch` -> `.venv-et`) that reuses the main venv's torch through a `.pth`
line. An installed wheel has no Makefile: its users get the venv and pip commands
instead (install_hint: the pins travel in the wheel as export/executorch-requirements.txt).
The main pipeline reaches it by subprocess only: `python -m export.executorch`,
`python -m quant.et_ptq` and the ExecuTorch runner re-run themselves with this Python.
Torch-free: the main side imports it.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from zoo.util import ArmqError

REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "ARMQ_ET_PYTHON"          # another interpreter with executorch (tests, CI)
REQUIREMENTS = Path(__file__).resolve().parent / "executorch-requirements.txt"
MAKE_HINT = "run `make venv-executorch`"


def is_checkout() -> bool:
    """armq run from its repository (a Makefile beside the packages), not an installed wheel."""
    return (REPO / "Makefile").is_file() and (REPO / "pyproject.toml").is_file()


# A checkout: <repo>/.venv-et (make venv-executorch). An installed armq: beside the venv it
# is installed in (<project>/.venv -> <project>/.venv-et), the same layout.
DEFAULT_VENV = REPO / ".venv-et" if is_checkout() else Path(sys.prefix).parent / ".venv-et"


def install_hint() -> str:
    """How to make the ExecuTorch venv: `make venv-executorch` in a checkout; from a wheel
    (no Makefile), the commands with the pinned requirements the wheel carries."""
    if is_checkout():
        return MAKE_HINT
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch = f" torch=={version('torch').split('+')[0]}"
    except PackageNotFoundError:
        torch = " torch"
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return (f"create it: `{py} -m venv {DEFAULT_VENV} && {DEFAULT_VENV}/bin/pip install -r "
            f"{REQUIREMENTS}{torch} <the armq wheel you installed>` (armq looks there, or at "
            f"${ENV_VAR})")
_REEXEC_MARK = "ARMQ_ET_REEXEC"     # set in the re-run process: never re-run twice


class EtUnavailable(ArmqError):
    pass


def has_executorch() -> bool:
    """executorch importable in this interpreter (the ET venv itself)."""
    return importlib.util.find_spec("executorch") is not None


def et_python(required: bool = True) -> str | None:
    """The ET venv's interpreter: $ARMQ_ET_PYTHON, else <repo>/.venv-et/bin/python."""
    given = os.environ.get(ENV_VAR)
    cand = Path(given) if given else DEFAULT_VENV / "bin" / "python"
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    if not required:
        return None
    where = f"${ENV_VAR}={given}" if given else str(cand)
    raise EtUnavailable(f"the ExecuTorch venv is missing ({where} not found): {install_hint()}")


def missing_reason() -> str | None:
    """None when ExecuTorch can run (here or in its venv), else the one-line reason."""
    if has_executorch() or et_python(required=False):
        return None
    return f"ExecuTorch is not installed ({DEFAULT_VENV} is missing): {install_hint()}"


def child_env() -> dict:
    """The environment of an ET-venv subprocess: this checkout first on PYTHONPATH, so a
    worktree's armq wins over the one the main venv installed. An installed armq adds
    nothing: its site-packages would put the main venv's packages before the ET venv's
    (the ET venv has its own armq, installed from the wheel)."""
    env = dict(os.environ)
    if not is_checkout():
        return env
    parts = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def reexec_in_venv(module: str, argv: list[str] | None) -> None:
    """`python -m <module>` from the main venv: run it again with the ET venv's Python
    (never returns), or a one-line error naming `make venv-executorch`."""
    if has_executorch():
        return
    if os.environ.get(_REEXEC_MARK):   # already re-run once: that Python lacks it too
        raise EtUnavailable(f"{sys.executable} has no executorch: {install_hint()}")
    py = et_python()
    args = list(sys.argv[1:] if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(py, [py, "-m", module, *args], {**child_env(), _REEXEC_MARK: "1"})
