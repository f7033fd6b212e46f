"""Importing a factory file the way Python runs a script, and what it imported.

`python model.py` puts the file's folder first on sys.path: `import blocks` and
`from ghost_utils import X` find the files beside it. A file inside a package folder
(an `__init__.py` beside it) is imported by its dotted name from above the top package,
so its relative imports (`from .blocks import X`) work. Every stage is its own process
and imports the file again this way (deploy passes the same --source to each).

The card records every local file the factory imported (relative path + sha256), so a
later stage that rebuilds the torch model notices a changed sibling, not only a changed
factory file. The card's list is data: its paths are only hashed, under the folder of
the --source the user gives again, never imported.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import site
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any, Iterator

from zoo.util import ArmqError

from .card import sha256_of

# The local files a card records: a factory importing more, or bigger ones, is refused in
# one line (a card stays small; hashing stays bounded).
MAX_LOCAL_FILES = 256
MAX_LOCAL_FILE_BYTES = 64 << 20
_MARK = "__armq_user_root__"   # set on a module armq imported from a factory's folder


@dataclass(frozen=True)
class ImportPlan:
    """How a factory file is imported: `root` goes first on sys.path; `module` is the
    dotted name inside a package, None for a plain file (imported by path)."""

    path: Path
    root: Path
    module: str | None

    @property
    def name(self) -> str:
        return self.module or ("armq_user_model_" +
                               hashlib.sha1(str(self.path).encode()).hexdigest()[:10])


def import_plan(path: Path) -> ImportPlan:
    """A plain file's root is its folder; a file in a package folder (chain of
    `__init__.py`) is imported from above the top package."""
    path = path.resolve()
    root, parts = path.parent, [path.stem]
    while (root / "__init__.py").is_file() and root.parent != root:
        parts.insert(0, root.name)
        root = root.parent
    if len(parts) == 1 or not all(p.isidentifier() for p in parts):
        return ImportPlan(path, path.parent, None)
    return ImportPlan(path, root, ".".join(parts))


def _installed_dirs() -> tuple[Path, ...]:
    """Where the interpreter and installed packages live: a venv inside the user's folder
    is not the user's code."""
    dirs = {sys.prefix, sys.base_prefix, *site.getsitepackages(), site.getusersitepackages()}
    return tuple(Path(d).resolve() for d in dirs if d)


def _mark_of(mod: Any) -> str | None:
    """The folder mark of a module (read from its __dict__: a module-level __getattr__
    of some library must not run)."""
    d = getattr(mod, "__dict__", None)
    return d.get(_MARK) if isinstance(d, dict) else None


def _file_under(mod: ModuleType, root: Path, skip: tuple[Path, ...]) -> Path | None:
    d = getattr(mod, "__dict__", None)
    f = d.get("__file__") if isinstance(d, dict) else None
    if not isinstance(f, str):
        return None
    try:
        p = Path(f).resolve()
    except OSError:
        return None
    if not p.is_relative_to(root) or any(p.is_relative_to(d) for d in skip):
        return None
    if any(part in ("site-packages", "dist-packages") for part in p.parts):
        return None
    return p


def _forget_other_roots(plan: ImportPlan) -> None:
    """Modules an earlier factory (another folder, same process) left under the names
    this one's siblings may use: dropped so that `import blocks` finds this folder's."""
    for name, mod in list(sys.modules.items()):
        mark = _mark_of(mod)
        if mark is not None and mark != str(plan.root):
            del sys.modules[name]


@contextlib.contextmanager
def factory_scope(plan: ImportPlan) -> Iterator[None]:
    """The factory's folder first on sys.path while its file is imported and called; the
    modules it imported from that folder are marked as the factory's local files."""
    _forget_other_roots(plan)
    before = set(sys.modules)
    entry = str(plan.root)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
        skip = _installed_dirs()
        for name in set(sys.modules) - before:
            mod = sys.modules.get(name)
            if mod is not None and _file_under(mod, plan.root, skip) is not None:
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(mod, _MARK, str(plan.root))


def import_file(plan: ImportPlan, spec: str) -> ModuleType:
    """The factory file's module (call inside factory_scope)."""
    if plan.module is None:
        mspec = importlib.util.spec_from_file_location(plan.name, plan.path)
        if mspec is None or mspec.loader is None:
            raise ArmqError(f"--source {spec}: cannot import {plan.path}")
        mod = importlib.util.module_from_spec(mspec)
        sys.modules[plan.name] = mod
        mspec.loader.exec_module(mod)
        return mod
    top = plan.module.split(".")[0]
    held = sys.modules.get(top)
    if held is not None and _mark_of(held) != str(plan.root):
        raise ArmqError(f"--source {spec}: its package name '{top}' is already taken by "
                        f"another module ({getattr(held, '__file__', None) or 'built in'}); "
                        "rename the package folder")
    mod = importlib.import_module(plan.module)
    if Path(str(getattr(mod, "__file__", ""))).resolve() != plan.path:
        raise ArmqError(f"--source {spec}: '{plan.module}' imported {mod.__file__}, not "
                        f"{plan.path}; rename the package folder")
    return mod


def local_files(plan: ImportPlan) -> list[dict[str, str]]:
    """[{path (relative to the root, posix), sha256}] of the files the factory imported
    from its folder tree, the factory file itself excluded (the record hashes it)."""
    skip = _installed_dirs()
    files: set[Path] = set()
    for mod in list(sys.modules.values()):
        if _mark_of(mod) == str(plan.root):
            p = _file_under(mod, plan.root, skip)
            if p is not None and p != plan.path and p.is_file():
                files.add(p)
    if len(files) > MAX_LOCAL_FILES:
        raise ArmqError(f"{plan.path.name} imports {len(files)} files from {plan.root}; armq "
                        f"records at most {MAX_LOCAL_FILES} (import fewer, or save a .pt2)")
    out = []
    for p in sorted(files):
        if p.stat().st_size > MAX_LOCAL_FILE_BYTES:
            raise ArmqError(f"{p} is over {MAX_LOCAL_FILE_BYTES >> 20} MiB: armq hashes at most "
                            "that much per imported file (save a .pt2 instead)")
        out.append({"path": p.relative_to(plan.root).as_posix(), "sha256": sha256_of(p)})
    return out


def changed_local_file(plan: ImportPlan, recorded: Any) -> str | None:
    """The first recorded local file (a card's list: data) that is missing or differs under
    this plan's root, as a one-line reason; None when all match."""
    if recorded is None:
        return None   # a card written before local files were recorded
    if not isinstance(recorded, list) or len(recorded) > MAX_LOCAL_FILES:
        return f"the card's local_files is not a list of at most {MAX_LOCAL_FILES} files"
    for entry in recorded:
        rel = entry.get("path") if isinstance(entry, dict) else None
        want = entry.get("sha256") if isinstance(entry, dict) else None
        pp = PurePosixPath(rel) if isinstance(rel, str) and rel else None
        if pp is None or pp.is_absolute() or ".." in pp.parts or not isinstance(want, str):
            return f"the card's local_files entry {str(rel)[:80]!r} is not a relative path"
        p = plan.root / pp
        if not p.is_file():
            return f"{pp} (imported at export) is missing under {plan.root}"
        if p.stat().st_size > MAX_LOCAL_FILE_BYTES or sha256_of(p) != want:
            return f"{pp} (imported at export) has changed since export"
    return None
