"""The package graph is a DAG: zoo < export < android_bench < quant < deploy < armq.

Every import of every module (top-level or inside a function, relative ones resolved)
may only name its own package or one below it. Read with `ast` from the source files,
so an import that runs only on some path counts as much as one that always runs.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDER = ("zoo", "export", "android_bench", "quant", "deploy", "armq")
RANK = {p: i for i, p in enumerate(ORDER)}


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute module name) of every Import / ImportFrom anywhere in the file."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    package = parts[:-1]          # what a relative import of this module starts from
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
    return sorted(out)


def upward_edges(root: Path = REPO) -> list[str]:
    bad = []
    for pkg in ORDER:
        for f in sorted((root / pkg).rglob("*.py")):
            for line, mod in imported_modules(f, root):
                top = mod.split(".")[0]
                if RANK.get(top, -1) > RANK[pkg]:
                    bad.append(f"{f.relative_to(root)}:{line}: {pkg} -> {mod}")
    return bad


def test_the_scan_finds_function_level_and_relative_upward_imports(tmp_path):
    pkg = tmp_path / "export" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("import zoo.util\nfrom .. import card\n\n"
                              "def f():\n    if True:\n        from quant.common import x\n"
                              "    from ...deploy import plan\n")
    assert upward_edges(tmp_path) == ["export/sub/m.py:6: export -> quant.common",
                                      "export/sub/m.py:7: export -> deploy"]
    # relative imports resolve against the module's own package
    spec = REPO / "android_bench" / "targets" / "spec.py"
    assert "android_bench.qemu_cpus" in {m for _, m in imported_modules(spec)}


def test_no_package_imports_upward():
    bad = upward_edges()
    assert not bad, "imports pointing up the package order " + " < ".join(ORDER) + ":\n" + \
        "\n".join(bad)


MAX_MODULE_LINES = 450
# copied alone to boards, phones and the QEMU sysroot: one self-contained file by design
LONG_BY_DESIGN = {"android_bench/runner.py"}


def test_no_module_over_450_lines():
    long = [f"{f.relative_to(REPO)}: {n} lines" for pkg in ORDER
            for f in sorted((REPO / pkg).rglob("*.py"))
            if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES
            and str(f.relative_to(REPO)) not in LONG_BY_DESIGN]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n" + \
        "\n".join(long)
