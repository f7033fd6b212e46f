"""Count the bad-input cases the contract tests try.

    python scripts/count_bad_inputs.py [test files...]

Collects (`pytest --collect-only -q`, nothing runs) the test ids of the contract test
files -- by default tests/test_cli_contract.py and tests/test_contract_round{2,3,4,4b}.py -- and
prints one line per file and the total: every collected id is one bad input tried
(a parametrized case counts once per parameter set). Exit 1 if collection fails.
"""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ("tests/test_cli_contract.py", "tests/test_contract_round2.py",
           "tests/test_contract_round3.py", "tests/test_contract_round4.py",
           "tests/test_contract_round4b.py")


def collect(files: list[str]) -> list[str]:
    """Node ids (`file::test[params]`) pytest would run, without running them."""
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        *files], cwd=REPO, capture_output=True, text=True)
    ids = [ln.strip() for ln in r.stdout.splitlines() if "::" in ln]
    if r.returncode not in (0, 5) or not ids:
        sys.exit(f"count_bad_inputs: error: pytest could not collect {' '.join(files)} "
                 f"(exit {r.returncode}): {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    return ids


def main(argv: list[str]) -> int:
    files = [f for f in (argv or DEFAULT) if (REPO / f).is_file()]
    if not files:
        sys.exit("count_bad_inputs: error: no test file found")
    ids = collect(files)
    per_file = Counter(i.split("::", 1)[0] for i in ids)
    param = Counter(i.split("::", 1)[0] for i in ids if "[" in i)
    for f, n in sorted(per_file.items()):
        print(f"{f}: {n} ({param[f]} parametrized cases, {n - param[f]} single tests)")
    print(f"total: {len(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
