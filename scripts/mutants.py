"""Targeted mutation check of the code that guards users: does the suite notice a bug?

    python scripts/mutants.py              # every mutant: killed / survived, the kill rate
    python scripts/mutants.py --list       # the mutants, no run
    python scripts/mutants.py --only ID[,ID...]

Each mutant is one small, plausible bug in a module that protects users -- card validation
(export/card.py), archive safety and size caps (zoo/data.py), the INT8 recipe choice
(quant/config.py), range calibration (quant/ranges.py, quant/pt2e.py, quant/common.py),
speed-up arithmetic (android_bench/compare.py) and run comparison (deploy/rundiff.py): a
file, an exact snippet of it (found exactly once), its replacement, and the fast tests that
should fail. The repository is copied once to a temporary folder (assets/ linked, not
copied); each mutant is applied to that copy, the tests run there (`pytest -x`, no bytecode
cache, so a restored file is never shadowed by a stale .pyc), and the file is restored. A
mutant is killed when the tests fail or time out. Exit 1 if the tests fail without any
mutant (the baseline) or a snippet is not found.

mutmut (3.x) was the alternative: it mutates every expression of a module (hundreds per
file here) and runs the tests for each, far from minutes on this suite's subprocess-heavy
tests; these mutants are the bugs a reviewer would worry about.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300          # per mutant; a mutant that hangs the tests counts as killed

CARD = ("tests/test_cli_contract.py::test_card_validator_refuses",
        "tests/test_cli_contract.py::test_card_validator_accepts")
NORM = ("tests/test_contract_round4b.py::test_card_norm_scale_refused",)
DATA = ("tests/test_zoo_data_train.py::test_archive_with_unsafe_member_is_refused",
        "tests/test_zoo_data_train.py::test_archive_names_with_dots_are_not_unsafe")
CAPS = ("tests/test_contract_round2.py::test_bounded_read_does_not_trust_the_header",
        "tests/test_contract_round2.py::test_member_cap_every_source_kind",
        "tests/test_contract_round2.py::test_pixel_cap_by_header")
RECIPE = ("tests/test_int8_recipes.py::test_recipe_per_target",
          "tests/test_int8_recipes.py::test_recipe_from_a_probe_counts_only_present_features",
          "tests/test_int8_recipes.py::test_local_recipe_is_the_probes")
KL = ("tests/test_quant_units.py::test_kl_range_clips_outliers_and_keeps_relu_at_zero",
      "tests/test_quant_units.py::test_kl_range_models_the_256_level_int8_quantizer")
PCT = ("tests/test_quant_units.py::test_percentile_range_clips_the_outer_tails_only",)
COMPARE = ("tests/test_compare.py",)
RUNDIFF = ("tests/test_rundiff_units.py",)


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str       # found exactly once in file
    replacement: str
    tests: tuple[str, ...]
    bug: str            # what a user would suffer


MUTANTS: tuple[Mutant, ...] = (
    # ---- card validation (export/card.py) ----
    Mutant("card-shape-check-gone", "export/card.py",
           'if isinstance(inp, dict) and "shape" in inp and _dims(inp["shape"]) is None:',
           "if False:", CARD, "a card with input shape [1,3,-8,'x'] is accepted"),
    Mutant("card-dims-zero", "export/card.py", "and not isinstance(x, bool) and x > 0)",
           "and not isinstance(x, bool) and x >= 0)", CARD, "zero-sized dims accepted"),
    Mutant("card-dims-empty-name", "export/card.py", "or (isinstance(x, str) and x)",
           "or isinstance(x, str)", CARD, "an empty dim name accepted"),
    Mutant("card-name-check-gone", "export/card.py", 'if not plain_name(d["name"]):',
           'if not isinstance(d["name"], str):', CARD, "a card name '../x' steers output paths"),
    Mutant("card-name-control-chars", "export/card.py",
           'name not in ("", ".", "..") and shown(name) == name',
           'name not in ("", ".", "..")', CARD, "control characters in a name reach file names"),
    Mutant("card-size-no-upper-bound", "export/card.py",
           "return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi",
           "return isinstance(v, int) and not isinstance(v, bool) and lo <= v",
           CARD, "a 10^6-pixel resize accepted (memory)"),
    Mutant("card-variant-size-unchecked", "export/card.py",
           'and not _is_size(variant["input_size"]):', "and False:",
           CARD, "a variant input_size of -8 reaches the model builder"),
    Mutant("card-channels-check-gone", "export/card.py",
           "if channels is not None and len(v) != channels:", "if False:",
           CARD, "2 mean/std values for a 3-channel input"),
    Mutant("card-norm-scale", "export/card.py", "if any(not lo <= x <= hi for x in values):",
           "if False:", CARD + NORM, "mean 128 / std 64 (0..255 scale) accepted"),
    Mutant("card-mean-std-length", "export/card.py",
           'if len(pre["mean"]) != len(pre["std"]):', "if False:", CARD,
           "mean and std of different lengths"),
    Mutant("card-class-count", "export/card.py",
           "if shape and isinstance(shape[-1], int) and shape[-1] != len(names):", "if False:",
           CARD, "9 class names for 10 outputs: labels shifted"),
    Mutant("card-num-classes", "export/card.py", "if n is not None and n != len(names):",
           "if False:", CARD, "num_classes disagrees with class_names"),
    Mutant("card-path-absolute", "export/card.py", "or Path(path).is_absolute() or", "or",
           CARD, "an artifact path /etc/passwd"),
    Mutant("card-path-dotdot-anywhere", "export/card.py", '".." in Path(path).parts',
           'path.startswith("..")', CARD, "an artifact path a/../../x"),
    Mutant("card-path-backslash", "export/card.py", 'shown(path) != path or "\\\\" in path',
           "shown(path) != path", CARD, "an artifact path ..\\x"),
    Mutant("card-symlink-escape", "export/card.py",
           "if not path.resolve().is_relative_to(folder.resolve()):", "if False:",
           ("tests/test_contract_round3.py::test_card_artifact_symlink_escape_refused",),
           "an artifact symlinked outside the card's folder is read"),
    # ---- archive safety and caps (zoo/data.py) ----
    Mutant("data-zip-member-check-gone", "zoo/data.py", "if not _safe_member(info.filename):",
           "if False:", DATA, "a zip member ../x is read"),
    Mutant("data-tar-member-check-gone", "zoo/data.py", "if not _safe_member(m.name):",
           "if False:", DATA, "a tar member ../x is read"),
    Mutant("data-absolute-member", "zoo/data.py",
           'return not pp.is_absolute() and ".." not in pp.parts', 'return ".." not in pp.parts',
           DATA, "a member /abs/x is read"),
    Mutant("data-dotdot-prefix-only", "zoo/data.py",
           'return not pp.is_absolute() and ".." not in pp.parts',
           'return not pp.is_absolute() and not name.startswith("..")', DATA,
           "a member cat/../../x is read"),
    Mutant("data-bounded-read", "zoo/data.py", "    if len(data) > cap:", "    if False:",
           CAPS, "a member under-declaring its size is read past the cap"),
    Mutant("data-member-cap-unit", "zoo/data.py",
           'env_limit("ARMQ_MAX_MEMBER_MB", MAX_MEMBER_MB, 0.001) * 2**20',
           'env_limit("ARMQ_MAX_MEMBER_MB", MAX_MEMBER_MB, 0.001) * 2**30',
           CAPS, "the member cap 1024x too large"),
    Mutant("data-pixel-cap", "zoo/data.py", "if w * h > limit:", "if w * h > 2 * limit:",
           CAPS, "images over ARMQ_MAX_PIXELS decoded"),
    # ---- INT8 recipe choice (quant/config.py) ----
    Mutant("recipe-every-feature-present", "quant/config.py",
           'flags = [k for k, v in cpu["features"].items() if v]', 'flags = list(cpu["features"])',
           RECIPE, "8-bit weights on an x86 host without VNNI (int16 saturation)"),
    Mutant("recipe-arm64-unknown", "quant/config.py",
           'if m in ("aarch64", "arm64", "armv8l", "armv7l"):',
           'if m in ("aarch64", "armv8l", "armv7l"):', RECIPE,
           "a board reporting arm64 (macOS, some Androids) gets no recipe"),
    Mutant("recipe-vnni-always", "quant/config.py", "        if vnni:", "        if True:",
           RECIPE, "x86 without VNNI gets 8-bit weights"),
    Mutant("recipe-avx-vnni-unknown", "quant/config.py",
           'X86_VNNI_FLAGS = ("avx512_vnni", "avx_vnni")', 'X86_VNNI_FLAGS = ("avx512_vnni",)',
           RECIPE, "AVX-VNNI (Alder Lake) gets 7-bit weights"),
    Mutant("recipe-dotprod-flag-name", "quant/config.py",
           "if flags & set(ARM_DOTPROD_FLAGS):", 'if "asimddp" in flags:',
           RECIPE, "a board probed with 'dotprod' gets U8S8"),
    Mutant("recipe-a72-dotprod", "quant/config.py", '"cortex-a72": False', '"cortex-a72": True',
           RECIPE, "QEMU A72 runs S8S8 without SDOT"),
    # ---- range calibration (quant/ranges.py, quant/pt2e.py, quant/common.py) ----
    Mutant("kl-128-levels", "quant/ranges.py", "levels: int = 256,", "levels: int = 128,",
           KL, "KL ranges for a 128-level quantizer (ORT's symmetric one)"),
    Mutant("kl-no-outlier-folding", "quant/ranges.py", "        p[-1] += hist[b:].sum()\n", "",
           KL, "clipping costs nothing: ranges too narrow"),
    Mutant("kl-no-low-folding", "quant/ranges.py", "        p[0] += hist[:a].sum()\n", "",
           KL, "clipping the negative side costs nothing"),
    Mutant("kl-q-on-empty-bins", "quant/ranges.py",
           "q = np.repeat(per, np.diff(bounds)) * nz", "q = np.repeat(per, np.diff(bounds))",
           KL, "the quantized histogram spreads onto empty bins: KL misjudges sparse data"),
    Mutant("kl-zero-not-centre", "quant/ranges.py", "a = int(round(zero - zero * frac))", "a = 0",
           KL, "windows no longer shrink around zero: negatives never clipped"),
    Mutant("kl-sliced-is-p", "quant/ranges.py",
           "sums = np.add.reduceat(sliced, bounds[:-1])", "sums = np.add.reduceat(p, bounds[:-1])",
           KL, "the candidate includes the folded outliers: KL blind to clipping"),
    Mutant("pct-cut-twice", "quant/pt2e.py", "cut = (100.0 - PERCENTILE) / 200.0",
           "cut = (100.0 - PERCENTILE) / 100.0", PCT, "percentile clips twice the tails"),
    Mutant("pct-hi-off-by-one", "quant/pt2e.py",
           "int(np.searchsorted(cdf, 1.0 - cut)) + 1)]", "int(np.searchsorted(cdf, 1.0 - cut)))]",
           PCT, "the percentile's high end one bin short"),
    Mutant("pct-relu-low-end", "quant/pt2e.py",
           "return min(lo, 0.0) if edges[0] < 0 else edges[0], max(hi, 0.0)",
           "return lo, max(hi, 0.0)", PCT, "ReLU outputs lose 0 from their range"),
    Mutant("pct-constant", "quant/common.py", "PERCENTILE = 99.999", "PERCENTILE = 99.99",
           PCT, "ten times more clipped"),
    # ---- speed-up arithmetic (android_bench/compare.py) ----
    Mutant("cmp-ratio-inverted", "android_bench/compare.py", "    return base / model",
           "    return model / base", COMPARE, "speed-ups inverted"),
    Mutant("cmp-ratio-zero-model", "android_bench/compare.py",
           "if not (base > 0 and model > 0) or", "if not (base > 0) or",
           COMPARE, "a 0 ms model: division by zero"),
    Mutant("cmp-bit-width-inverted", "android_bench/compare.py",
           "return (8 if base_int8 else 32) / (8 if model_int8 else 32)",
           "return (8 if model_int8 else 32) / (8 if base_int8 else 32)",
           COMPARE, "INT8 theory 1/4 instead of 4"),
    Mutant("cmp-theory-no-bit-width", "android_bench/compare.py",
           "return None if r is None else r * bit_width_ratio(base_int8, model_int8)",
           "return r", COMPARE, "INT8 vs FP32 baseline theory misses 4x"),
    Mutant("cmp-ci-range-crossed", "android_bench/compare.py",
           "lo, hi = ratio(base_ci[0], model_ci[1]), ratio(base_ci[1], model_ci[0])",
           "lo, hi = ratio(base_ci[0], model_ci[0]), ratio(base_ci[1], model_ci[1])",
           COMPARE, "a speed-up range narrower than the CIs allow"),
    Mutant("cmp-qemu-latency-speedup", "android_bench/compare.py",
           "return self.instr_ratio if self.emulated else self.measured", "return self.measured",
           COMPARE, "emulation time shown as a QEMU speed-up"),
    Mutant("cmp-qemu-efficiency", "android_bench/compare.py", "eff = efficiency(instr, theo)",
           "eff = efficiency(meas, theo)", COMPARE, "QEMU efficiency from emulated ms"),
    Mutant("cmp-baseline-any-setting", "android_bench/compare.py",
           "same = [b for b in bases if b.setting == e.setting]", "same = bases",
           COMPARE, "a Pi model compared with a laptop baseline"),
    Mutant("cmp-baseline-precision", "android_bench/compare.py",
           "b = next((b for b in same if b.int8 == e.int8), None) or",
           "b = next((b for b in same if not b.int8), None) or",
           COMPARE, "INT8 model always against the FP32 baseline"),
    # ---- run comparison (deploy/rundiff.py) ----
    Mutant("rundiff-top1-ignored", "deploy/rundiff.py",
           """"accuracy": {k: {f: v for f, v in r.items() if f != "seconds"}""",
           """"accuracy": {k: {f: v for f, v in r.items() if f not in ("seconds", "top1")}""",
           RUNDIFF, "a changed top-1 reported as agreeing"),
    Mutant("rundiff-bench-file-ignored", "deploy/rundiff.py",
           """for f in ("file", "size_bytes", "emulated", "runtime",""",
           """for f in ("size_bytes", "emulated", "runtime",""",
           RUNDIFF, "another file benchmarked, runs 'agree'"),
    Mutant("rundiff-why-int8-qemu-ignored", "deploy/rundiff.py",
           """return stage.get("kind") == "why_int8" and not is_emulated(""",
           """return stage.get("kind") == "why_int8" or not is_emulated(""",
           RUNDIFF, "QEMU why_int8 decisions not compared"),
    Mutant("rundiff-recipe-ignored", "deploy/rundiff.py",
           """"targets": {t.get("id"): (t.get("recipe") or {}).get("name")""",
           """"targets": {t.get("id"): None""", RUNDIFF, "another INT8 recipe, runs 'agree'"),
    Mutant("rundiff-tolerance-min", "deploy/rundiff.py",
           "else max(x.variation_pct, y.variation_pct)",
           "else min(x.variation_pct, y.variation_pct)", RUNDIFF,
           "counts within one run's own noise reported as different"),
    Mutant("rundiff-variation-not-pct", "deploy/rundiff.py",
           "var = (100.0 * (max(vals) - min(vals)) / med",
           "var = ((max(vals) - min(vals)) / med", RUNDIFF,
           "tolerance 100x too small"),
    Mutant("rundiff-bench-file-outside-run", "deploy/rundiff.py",
           "if not path.is_relative_to(run_dir.resolve()) or not path.is_file():",
           "if not path.is_file():", RUNDIFF, "a results.json reads files outside its run"),
)


def check(mutants: tuple[Mutant, ...] = MUTANTS, root: Path = REPO) -> list[str]:
    """Problems with the list: ids unique, each snippet found exactly once in its file, the
    mutated file still compiles, the mapped test files exist."""
    problems = []
    if len({m.id for m in mutants}) != len(mutants):
        problems.append("mutant ids are not unique")
    for m in mutants:
        path = root / m.file
        text = path.read_text() if path.is_file() else ""
        n = text.count(m.original)
        if n != 1:
            problems.append(f"{m.id}: snippet found {n} times in {m.file}: {m.original!r}")
            continue
        if m.original == m.replacement:
            problems.append(f"{m.id}: replacement equals the original")
        try:
            compile(text.replace(m.original, m.replacement), m.file, "exec")
        except SyntaxError as e:
            problems.append(f"{m.id}: the mutated {m.file} does not compile ({e.msg})")
        for t in m.tests:
            if not (root / t.split("::")[0]).is_file():
                problems.append(f"{m.id}: no test file {t.split('::')[0]}")
    return problems


def _copy_repo(dst: Path) -> Path:
    skip = {".git", ".venv", ".venv-et", "artifacts", "runs", "assets", "__pycache__",
            ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
    shutil.copytree(REPO, dst, symlinks=True, ignore=lambda d, names: [n for n in names if n in skip])
    (dst / "assets").symlink_to(REPO / "assets")
    return dst


def _run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[bool, float]:
    """(tests passed, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    shared = REPO.parent / "shared" / "data"
    if "ARMQ_SHARED_DATA" not in env and shared.is_dir():
        env["ARMQ_SHARED_DATA"] = str(shared)
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            "-m", "not slow", *tests], cwd=copy, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT_S)
        ok = r.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    return ok, time.monotonic() - t0


def run(mutants: tuple[Mutant, ...]) -> int:
    problems = check(mutants)
    if problems:
        print("mutants: error: " + "; ".join(problems), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="armq-mutants-") as td:
        copy = _copy_repo(Path(td) / "repo")
        all_tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        ok, secs = _run_tests(copy, all_tests)
        print(f"baseline: the mapped tests {'pass' if ok else 'FAIL'} without mutants "
              f"({secs:.0f} s)", flush=True)
        if not ok:
            return 1
        survived = []
        for i, m in enumerate(mutants, 1):
            path = copy / m.file
            original = path.read_text()
            try:
                path.write_text(original.replace(m.original, m.replacement))
                passed, secs = _run_tests(copy, m.tests)
            finally:
                path.write_text(original)
            if passed:
                survived.append(m)
            print(f"[{i:2d}/{len(mutants)}] {'SURVIVED' if passed else 'killed  '} {m.id:32s} "
                  f"{secs:5.1f} s  ({m.bug})", flush=True)
    killed = len(mutants) - len(survived)
    print(f"kill rate: {killed}/{len(mutants)} = {100.0 * killed / len(mutants):.1f} %"
          + (f"; survived: {', '.join(m.id for m in survived)}" if survived else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mutants", description=__doc__.splitlines()[0])
    p.add_argument("--list", action="store_true", help="print the mutants and exit")
    p.add_argument("--only", metavar="ID[,ID...]", help="run only these mutants")
    args = p.parse_args(argv)
    chosen = MUTANTS
    if args.only:
        want = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(want) - {m.id for m in MUTANTS})
        if unknown:
            p.error(f"--only: no mutant {', '.join(unknown)}")
        chosen = tuple(m for m in MUTANTS if m.id in want)
    if args.list:
        for m in chosen:
            print(f"{m.id:32s} {m.file:26s} {m.bug}")
        return 0
    return run(chosen)


if __name__ == "__main__":
    sys.exit(main())
