"""Public model code as users bring it (export/user_code.py, export/source.py,
export/parity.py): a factory importing a sibling file, a package with relative imports, a
`**kwargs` factory, a reparameterised net whose logits reach the tens of thousands, and
stage processes that never import from the folder they run in. Tiny models: seconds each."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from export import onnx as export_onnx
from export.parity import Tolerance, compare
from export.source import SourceError, parse_source
from zoo.util import ArmqError

from _export_util import REPO, run_module

CALIB = REPO / "assets" / "data" / "cifar10_calib.tar.gz"

# GhostNet-style: the cheap-operation module lives in a sibling file, the factory takes
# **kwargs and hands them to the class (as huawei-noah's ghostnet(**kwargs) does).
GHOST_UTILS = """
    import torch
    from torch import nn

    class GhostModule(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            half = cout // 2
            self.primary = nn.Sequential(nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
            self.cheap = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False),
                                       nn.BatchNorm2d(half), nn.ReLU())

        def forward(self, x):
            y = self.primary(x)
            return torch.cat([y, self.cheap(y)], 1)
"""
GHOST = """
    from torch import nn
    from ghost_utils import GhostModule

    class TinyGhost(nn.Module):
        def __init__(self, num_classes=1000, width=16):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1),
                                      GhostModule(width, 2 * width), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
            self.head = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.head(self.body(x))

    def ghostnet(**kwargs):
        return TinyGhost(**kwargs)
"""
# MobileOne-style: three train-time branches folded into one 3x3 conv by the factory; the
# BatchNorm gains make activations grow block by block, so the logits reach ~1e4 and
# float32 rounding alone moves them by more than 1e-4 while every top-1 class agrees.
REPNET = """
    import torch
    from torch import nn

    class RepBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.k3 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
            self.k1 = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
            self.skip = nn.BatchNorm2d(c)
            self.fused = None

        def forward(self, x):
            if self.fused is not None:
                return torch.relu(self.fused(x))
            return torch.relu(self.k3(x) + self.k1(x) + self.skip(x))

        @staticmethod
        def _fold(w, bn):
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            return w * s.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * s

        @torch.no_grad()
        def fuse(self):
            c = self.skip.num_features
            w3, b3 = self._fold(self.k3[0].weight, self.k3[1])
            w1, b1 = self._fold(nn.functional.pad(self.k1[0].weight, [1, 1, 1, 1]), self.k1[1])
            eye = torch.zeros(c, c, 3, 3)
            eye[range(c), range(c), 1, 1] = 1
            wi, bi = self._fold(eye, self.skip)
            self.fused = nn.Conv2d(c, c, 3, padding=1)
            self.fused.weight.copy_(w3 + w1 + wi)
            self.fused.bias.copy_(b3 + b1 + bi)
            del self.k3, self.k1, self.skip

    def build(num_classes=10):
        torch.manual_seed(0)
        blocks = [RepBlock(16) for _ in range(8)]
        net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *blocks, nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(16, num_classes))
        for b in blocks:
            for bn in (b.k3[1], b.k1[1], b.skip):
                bn.weight.data.uniform_(2.5, 3.0)
                bn.running_var.uniform_(0.5, 1.0)
            b.fuse()
        return net.eval()
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def _card(out: Path) -> dict:
    (card,) = out.glob("*.json")
    return json.loads(card.read_text())


def test_sibling_import_and_kwargs_factory(tmp_path, one_thread):
    """`from ghost_utils import ...` resolves beside the factory; `ghostnet(**kwargs)` gets
    num_classes (10, not its class's default 1000); the card hashes the sibling, and a
    stage rebuilding the torch model (the TFLite/ExecuTorch INT8 path) notices it changed."""
    from quant.common import resolve_models
    from quant.tflite_ptq import build_torch_model
    from export.runtime import ort_session, run_onnx

    src = _write(tmp_path / "ghost", {"ghost_utils.py": GHOST_UTILS, "ghostnet.py": GHOST})
    spec = f"{src}/ghostnet.py:ghostnet"
    out = tmp_path / "art"
    assert export_onnx.main(["--source", spec, "--dataset", "cifar10", "--num-images", "4",
                             "--out", str(out)]) == 0
    card = _card(out)
    assert card["output"]["shape"] == [1, 10]
    rec = card["source"]["model_source"]
    assert [f["path"] for f in rec["local_files"]] == ["ghost_utils.py"]
    # the exported graph computes what the factory's torch model computes
    import torch
    model = build_torch_model(resolve_models(str(out / "ghostnet_cifar10.json"), out)[0],
                              parse_source(spec))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = run_onnx(ort_session(out / "ghostnet_cifar10.onnx", 1), x)
    assert got.shape == (2, 10) and np.abs(got - want).max() < 1e-4
    (src / "ghost_utils.py").write_text(textwrap.dedent(GHOST_UTILS) + "\n# edited\n")
    (ref,) = resolve_models(str(out / "ghostnet_cifar10.json"), out)
    with pytest.raises(ArmqError, match="ghost_utils.py .imported at export. has changed"):
        build_torch_model(ref, parse_source(spec))


def test_package_with_relative_imports_in_a_fresh_process(tmp_path):
    """A factory inside a package folder (`from .blocks import stem`), exported by
    `python -m export.onnx` run from armq's folder (a stage's own process)."""
    root = _write(tmp_path / "proj", {
        "netpkg/__init__.py": "",
        "netpkg/blocks.py": "from torch import nn\n\ndef stem():\n    return nn.Conv2d(3, 8, 3, padding=1)\n",
        "netpkg/model.py": """
            from torch import nn
            from .blocks import stem

            def build(num_classes):
                return nn.Sequential(stem(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(8, num_classes))
        """})
    r = run_module("export.onnx", "--source", f"{root}/netpkg/model.py:build", "--dataset",
                   "cifar10", "--num-images", "2", "--threads", "1", "--out", tmp_path / "art")
    assert r.returncode == 0, r.stderr
    rec = _card(tmp_path / "art")["source"]["model_source"]
    assert [f["path"] for f in rec["local_files"]] == ["netpkg/__init__.py", "netpkg/blocks.py"]


def test_reparameterised_net_needs_a_relative_bound(tmp_path, one_thread):
    """Absolute 1e-4 fails on logits of ~1e4 (and says why, naming --rtol); a relative
    bound with full top-1 agreement passes, and the card records the criterion."""
    src = _write(tmp_path, {"repnet.py": REPNET})
    base = ["--source", f"{src}/repnet.py:build", "--dataset", "cifar10", "--num-images", "8",
            "--out", str(tmp_path / "art")]
    with pytest.raises(ArmqError, match=r"parity check failed: max \|onnx - torch\| = .* logits "
                       r"reach .*--rtol"):
        export_onnx.main(base)
    assert not (tmp_path / "art").exists() or not list((tmp_path / "art").iterdir())
    assert export_onnx.main([*base, "--rtol", "1e-5", "--min-agreement", "1"]) == 0
    par = _card(tmp_path / "art")["artifacts"]["onnx"]["parity"]
    assert par["max_abs_logit"] > 1e3 and par["max_abs_diff"] > 1e-4
    assert par["top1_agreement"] == 1.0 and par["passed"]
    assert (par["rtol"], par["min_agreement"]) == (1e-5, 1.0)
    assert par["max_abs_diff"] <= par["bound"] == pytest.approx(1e-4 + 1e-5 * par["max_abs_logit"])


def test_parity_fails_on_top1_disagreement_not_on_scale():
    ref = np.array([[1000.0, 999.0, 0.0], [0.0, 500.0, 1000.0]], np.float32)
    close = ref * (1 + 1e-7)
    rec = compare(ref, close, Tolerance(1e-4, 1e-6, 1.0), "onnx", {"n": 2})
    assert rec["passed"] and rec["max_abs_diff"] > 1e-5
    swapped = ref.copy()
    swapped[0, :2] = [999.0, 1000.0]    # within rtol 1e-2 of the largest logit, top-1 flips
    with pytest.raises(ArmqError, match="top-1 agreement onnx vs torch 0.500 < --min-agreement 1"):
        compare(ref, swapped, Tolerance(1e-4, 1e-2, 1.0), "onnx", {"n": 2})
    assert compare(ref, swapped, Tolerance(1e-4, 1e-2), "onnx", {"n": 2})["passed"]


def test_kwargs_factory_gets_num_classes_not_data():
    from export.source import factory_kwargs
    from zoo.config import default_data_config

    data = default_data_config("cifar10", None, 10)
    src = parse_source("m.mod:fn")
    assert factory_kwargs(lambda **kw: kw, src, data, {}) == {"num_classes": 10}
    assert factory_kwargs(lambda data, **kw: kw, src, data, {"width": 0.5}) == \
        {"data": data, "num_classes": 10, "width": 0.5}
    with pytest.raises(SourceError, match="does not take --width"):
        factory_kwargs(lambda num_classes: None, src, data, {"width": 0.5})


def test_deploy_passes_the_parity_criterion_to_every_export(tmp_path):
    from deploy.cli import build_parser
    from deploy.settings import Settings, resolve_all
    from deploy.spec import SpecError

    _write(tmp_path, {"repnet.py": REPNET})
    a = build_parser().parse_args(["--models", f"{tmp_path}/repnet.py:build:dataset=cifar10,"
                                   "shufflenet_v1:groups=3", "--parity-rtol", "1e-5",
                                   "--parity-min-agreement", "1"])
    for p in resolve_all(Settings(a)):
        args = p.export_args()
        assert args[-4:] == ["--rtol", "1e-05", "--min-agreement", "1.0"], args
    # ...and they are export's own flags
    parser = export_onnx.common.make_parser("x", "")
    ns = parser.parse_args(["--model", "m", "--rtol", "1e-05", "--min-agreement", "1.0"])
    assert Tolerance.of(ns) == Tolerance(1e-4, 1e-5, 1.0)
    with pytest.raises(SpecError, match="--parity-min-agreement must be from 0 to 1"):
        Settings(build_parser().parse_args(["--parity-min-agreement", "2"]))


FAKE_EXPORT = "open('IMPORTED', 'w').write('x')\nraise SystemExit('the folder export/ was imported')\n"


def test_stage_processes_never_import_the_working_folder(tmp_path):
    """A user's folder with its own `export/` package: a plain `python -m export.onnx`
    started there imports it (the hazard); deploy's stage executor starts the same command
    with PYTHONSAFEPATH, so armq's export runs and the folder's is never imported."""
    from deploy.executors.base import Job
    from deploy.executors.local import LocalExecutor

    _write(tmp_path / "user", {"export/__init__.py": FAKE_EXPORT})
    user = tmp_path / "user"
    argv = [sys.executable, "-m", "export.onnx", "--help"]
    plain = subprocess.run(argv, cwd=user, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and (user / "IMPORTED").is_file()   # the hazard is real
    (user / "IMPORTED").unlink()
    log = tmp_path / "stage.log"
    res = LocalExecutor().run(Job("export_onnx/x", argv, log, cwd=user), lambda: False,
                              lambda el: None)
    text = log.read_text()
    assert res.rc == 0 and "usage: python -m export.onnx" in text, text
    assert not (user / "IMPORTED").exists()


@pytest.mark.slow
def test_deploy_end_to_end_from_a_user_folder(tmp_path):
    """`python -P -m deploy` from a folder with its own export/ package, on the GhostNet-
    style factory with a sibling import: every stage ok, the folder's package never run;
    then quant.ptq's TFLite backend rebuilds the torch model from the sibling import."""
    src = _write(tmp_path / "ghost", {"ghost_utils.py": GHOST_UTILS, "ghostnet.py": GHOST})
    user = _write(tmp_path / "user", {"export/__init__.py": FAKE_EXPORT})
    r = subprocess.run([sys.executable, "-P", "-m", "deploy", "--models",
                        f"{src}/ghostnet.py:ghostnet:dataset=cifar10:num_classes=10",
                        "--targets", "local", "--runtimes", "ort", "--runs", "2", "--warmup",
                        "0", "--limit-eval", "20", "--num-calib", "8", "--target-eval", "0",
                        "--no-report", "--out", str(tmp_path / "runs")],
                       cwd=user, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "runs" / "latest" / "results.json").read_text())
    status = {s["id"]: s["status"] for s in res["stages"]}
    assert status and all(v in ("ok", "skipped") for v in status.values()), status
    ok = {s["kind"] for s in res["stages"] if s["status"] == "ok"}
    assert {"export_onnx", "quant_ort", "bench"} <= ok, status
    assert not (user / "IMPORTED").exists()
    art = tmp_path / "runs" / "latest" / "artifacts"
    r = run_module("quant.ptq", "--calib", CALIB, "--model", "ghostnet_cifar10", "--backend",
                   "tflite", "--num-calib", "8", "--holdout", "0", "--out", art, "--source",
                   f"{src}/ghostnet.py:ghostnet")
    assert r.returncode == 0, r.stderr
    assert (art / "ghostnet_cifar10.int8.tflite").stat().st_size > 0


def test_armq_cost_is_the_model_export_builds(capsys):
    """`armq cost` with export's flags counts the model export.onnx builds: no --dataset
    means the shipped weights' config (CIFAR-10, 32 px), as export.onnx does."""
    from armq.cli import COMMANDS
    from export import cost
    from zoo import resolve_variant
    from zoo.cost import cost_of

    assert COMMANDS["cost"][0] == "export.cost"
    assert cost.main(["--model", "shufflenet_v1", "--groups", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = cost_of(resolve_variant("shufflenet_v1", "cifar10", None, None, groups=3))
    assert (got["input_size"], got["macs"], got["params"]) == (32, want.macs, want.params)


def test_executorch_hint_from_a_wheel_is_a_command_to_run(tmp_path, monkeypatch):
    """An installed armq (no Makefile beside its packages) names the venv and pip commands,
    with the pinned requirements the wheel carries, and where armq looks for that venv."""
    from export import et_venv

    assert et_venv.install_hint() == et_venv.MAKE_HINT      # this checkout
    assert et_venv.REQUIREMENTS.is_file() and "executorch==" in et_venv.REQUIREMENTS.read_text()
    monkeypatch.setattr(et_venv, "REPO", tmp_path)          # as in site-packages
    hint = et_venv.install_hint()
    assert "make venv" not in hint and f"pip install -r {et_venv.REQUIREMENTS}" in hint
    assert "$ARMQ_ET_PYTHON" in hint and " torch==" in hint
    assert et_venv.child_env().get("PYTHONPATH") == __import__("os").environ.get("PYTHONPATH")


def test_console_script_does_not_import_the_working_folder(tmp_path):
    """A console script (the `armq` command) has its own folder, not the cwd, first on
    sys.path: a user's export/ folder is not imported; `python -m` without -P would."""
    _write(tmp_path, {"export/__init__.py": FAKE_EXPORT})
    script = tmp_path / "bin" / "armq"
    script.parent.mkdir()
    script.write_text("import sys\nfrom armq.cli import entry\nsys.exit(entry())\n")
    r = subprocess.run([sys.executable, str(script), "export-onnx", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: python -m export.onnx" in r.stdout, r.stderr
    assert not (tmp_path / "IMPORTED").exists()
