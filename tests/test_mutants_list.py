"""scripts/mutants.py's list stays usable: every mutant's snippet is found exactly once in
its file (a refactor that moves the code must re-anchor the mutant, not silently drop it),
the mutated file compiles, and each guarding module keeps its mutants. The mutation run
itself takes minutes (README, "Tests"); this is the cheap part."""
from __future__ import annotations

import importlib.util
import sys

from conftest import REPO


def _mutants():
    spec = importlib.util.spec_from_file_location("armq_mutants", REPO / "scripts" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # dataclasses look their module up while it runs
    spec.loader.exec_module(mod)
    return mod


def test_mutant_list_is_well_formed():
    m = _mutants()
    assert m.check() == []
    assert len(m.MUTANTS) >= 30
    files = {x.file for x in m.MUTANTS}
    assert {"export/card.py", "zoo/data.py", "quant/config.py", "quant/ranges.py",
            "android_bench/compare.py", "deploy/rundiff.py"} <= files
    assert all(x.tests and x.bug for x in m.MUTANTS)


def test_check_reports_a_stale_snippet(tmp_path):
    m = _mutants()
    (tmp_path / "a.py").write_text("x = 1\nx = 1\n")
    bad = (m.Mutant("twice", "a.py", "x = 1", "x = 2", ("a.py",), "?"),
           m.Mutant("gone", "a.py", "y = 1", "y = 2", ("a.py",), "?"),
           m.Mutant("syntax", "a.py", "x = 1\nx", "x = (\nx", ("a.py",), "?"))
    problems = m.check(bad, tmp_path)
    assert any(p.startswith("twice: snippet found 2 times") for p in problems)
    assert any(p.startswith("gone: snippet found 0 times") for p in problems)
    assert any(p.startswith("syntax:") and "does not compile" in p for p in problems)
