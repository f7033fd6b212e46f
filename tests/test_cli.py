"""The CLI contract of every `python -m` module, and the variant knobs' single source.

Every CLI (found, not listed: a module with `if __name__ == "__main__"` or a package
`__main__.py`) gives a bogus flag exactly one stderr line `python -m <mod>: error: ...`
with exit 2, prints `armq <version>` for --version, and lists --debug in --help.
The variant knobs are declared once (zoo._registry.KNOBS): a deploy spec goes to
the export CLI's flags and back without losing one (shiftnet depth=56 did).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from conftest import REPO, run_cli

PACKAGES = ("zoo", "export", "quant", "android_bench", "deploy")


def discover_clis() -> list[str]:
    mods = []
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            rel = f.relative_to(REPO).with_suffix("")
            if f.name == "__main__.py":
                mods.append(".".join(rel.parts[:-1]))
            elif re.search(r"""^if __name__ == ["']__main__["']:""", f.read_text(), re.M):
                mods.append(".".join(rel.parts))
    return mods


CLIS = discover_clis()


def test_discovery_finds_the_known_clis():
    assert {"deploy", "android_bench", "android_bench.runner", "zoo.train", "quant.ptq",
            "export.onnx", "zoo.cost", "android_bench.compare"} <= set(CLIS)


def expected_prog(mod: str) -> str:
    """`python -m <mod>`; a package's `cli` module is that package's entry (`deploy.cli`
    is what `python -m deploy` runs) and names it."""
    pkg, _, leaf = mod.rpartition(".")
    return f"python -m {pkg if leaf == 'cli' and pkg in CLIS else mod}"


@pytest.mark.parametrize("mod", CLIS)
def test_cli_contract(mod):
    prog = expected_prog(mod)
    r = run_cli(mod, "--no-such-flag-xyz", timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), r.stderr[-2000:]
    v = run_cli(mod, "--version", timeout=300)
    assert v.returncode == 0 and re.fullmatch(r"armq \S+.*\n", v.stdout), (v.stdout, v.stderr)
    h = run_cli(mod, "--help", timeout=300)
    assert h.returncode == 0, h.stderr[-2000:]
    assert h.stdout.startswith(f"usage: {prog} ")
    for flag in ("--debug", "--version", "-q", "--quiet", "-v, --verbose"):
        assert re.search(rf"^  {flag}\b|, {flag}\b", h.stdout, re.M), (flag, h.stdout)


# ---- the parser factory, in process ------------------------------------------------------------

def test_factory_usage_error_is_one_line(capsys):
    from zoo.clikit import make_parser
    from zoo.util import cli_entry

    def main(argv):
        p = make_parser("armq.demo", "Demo.\n\nMore.")
        p.add_argument("--n", type=int, required=True)
        p.parse_args(argv)
        return 0

    with pytest.raises(SystemExit) as e:
        cli_entry(main, "armq.demo", ["--n", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == "python -m armq.demo: error: argument --n: invalid int value: 'x'\n"


def test_quiet_and_verbose_set_the_verbosity(monkeypatch):
    import logging

    from zoo import clikit

    monkeypatch.setenv(clikit.VERBOSITY_ENV, "0")
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)
    p = clikit.make_parser("armq.demo")
    p.parse_args(["-vv"])
    assert clikit.verbosity() == 2 and root.level == logging.DEBUG
    assert clikit.progress_disabled() is None
    p.parse_args([])  # no flag: what the parent process passed down stays
    assert clikit.verbosity() == 2
    with pytest.warns(UserWarning):  # -q ignores warnings: keep the change inside this block
        import warnings

        with warnings.catch_warnings():
            p.parse_args(["-q"])
            assert clikit.verbosity() == -1 and root.level == logging.ERROR
            assert clikit.progress_disabled() is True
        warnings.warn("still shown after the block", UserWarning)


def test_version_falls_back_to_pyproject(monkeypatch):
    from importlib import metadata

    from zoo import clikit

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    text = (REPO / "pyproject.toml").read_text()
    want = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    assert clikit.armq_version() == want


# ---- variant knobs: one source ------------------------------------------------------------------

def test_every_registered_knob_is_declared_once_and_every_flag_is_used():
    import zoo
    from zoo._registry import KNOBS

    used = {k for m in zoo.list_models() for k in zoo.get_entry(m).params}
    assert used == set(KNOBS)
    for m in zoo.list_models():
        for k, p in zoo.get_entry(m).params.items():
            assert (p.name, p.type, p.cli_flag, p.short) == \
                (k, KNOBS[k].type, KNOBS[k].cli_flag, KNOBS[k].short)


def test_user_visible_flags_and_tags_are_unchanged():
    import zoo
    from zoo.cli import add_model_args

    p = argparse.ArgumentParser()
    add_model_args(p)
    flags = {s for a in p._actions for s in a.option_strings}
    assert {"--width", "--groups", "--part", "--multiplier", "--depth", "--shuffle-impl"} <= flags
    tags = {
        ("shufflenet_v1", (("groups", 3),)): "shufflenet_v1_g3_w1_cifar10",
        ("shufflenet_v1", (("shuffle", "gather"), ("width", 0.5))): "shufflenet_v1_g3_sgather_w0.5_cifar10",
        ("mobilenext", (("multiplier", 0.5),)): "mobilenext_m0.5_w1_cifar10",
        ("hetconv_vgg16", (("part", 8),)): "hetconv_vgg16_p8_cifar10",
        ("shiftnet", (("depth", 56),)): "shiftnet_depth56_w3_cifar10",
        ("alexnet", ()): "alexnet_cifar10",
    }
    for (model, params), tag in tags.items():
        assert zoo.resolve_variant(model, "cifar10", **dict(params)).tag == tag


def test_deploy_spec_keys_come_from_the_knobs():
    from deploy.spec import KEY_ALIASES, VARIANT_KEYS, parse_model_spec
    from zoo._registry import KNOBS

    assert set(VARIANT_KEYS) == set(KNOBS)
    for alias, key in {"w": "width", "g": "groups", "p": "part", "m": "multiplier",
                       "shuffle_impl": "shuffle", "shuffle-impl": "shuffle"}.items():
        assert KEY_ALIASES[alias] == key
    s = parse_model_spec("shufflenet_v1:g=8:w=0.5:shuffle-impl=gather")
    assert s.params == {"groups": 8, "width": 0.5, "shuffle": "gather"}


def _spec_to_export_args(text: str) -> tuple[object, argparse.Namespace]:
    """deploy's path: spec -> zoo variant -> the argv deploy gives export.onnx -> its parser."""
    import zoo
    from deploy.plan import variant_argv as variant_args  # what the export stage is given
    from deploy.spec import parse_model_spec
    from export import common

    spec = parse_model_spec(text)
    v = zoo.resolve_variant(spec.name, spec.dataset or "cifar10", spec.input_size,
                            spec.num_classes, **spec.params)
    argv = variant_args(v)
    args = common.parse(common.make_parser("export.onnx", "export"), [*argv, "--random-weights"])
    return v, args


def test_shiftnet_depth56_round_trips_from_deploy_spec_to_the_export_variant():
    import torch

    from export import build

    v, args = _spec_to_export_args("shiftnet:depth=56:dataset=cifar10")
    assert v.params["depth"] == 56 and args.depth == 56
    n = torch.get_num_threads()
    try:
        prep = build.prepare(build.ModelConfig.from_args(args), "export.onnx")
    finally:
        torch.set_num_threads(n)
    assert prep.variant == v and prep.variant.params["depth"] == 56
    assert prep.name == "shiftnet_depth56_w3_cifar10"
    # The built network really is ShiftResNet-56: 3 stages x 9 blocks.
    blocks = [m for m in prep.model.modules() if type(m).__name__ == "ShiftResBlock"]
    assert len(blocks) == 27


@pytest.mark.slow
def test_shiftnet_depth56_export_card_says_depth_56(tmp_path):
    import json

    import zoo
    from deploy.plan import variant_argv as variant_args  # what the export stage is given

    v = zoo.resolve_variant("shiftnet", "cifar10", depth=56)
    r = run_cli("export.onnx", *variant_args(v), "--random-weights", "--num-images", "2",
                "--out", tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / f"{v.tag}.json").read_text())
    assert card["variant"]["params"]["depth"] == 56 and card["name"] == v.tag


def test_variant_argv_round_trips_every_model():
    import zoo
    from zoo.cli import add_model_args, variant_argv, variant_from_args

    p = argparse.ArgumentParser()
    add_model_args(p)
    for m in zoo.list_models():
        for ds in ("imagenet", "cifar10"):
            v = zoo.resolve_variant(m, ds, num_classes=7)
            assert variant_from_args(p.parse_args(variant_argv(v))) == v, m


def test_no_other_knob_table_is_left():
    # The five hand-written tables this replaced: none may come back.
    for f, pat in (("zoo/cli.py", r'"--groups"'), ("deploy/spec.py", r'"groups": int'),
                   ("deploy/cli.py", r'"--shuffle-impl"'), ("zoo/_registry.py", r'"groups": "g"')):
        assert not re.search(pat, (REPO / f).read_text()), f
    assert Path(REPO / "zoo" / "clikit.py").is_file()
