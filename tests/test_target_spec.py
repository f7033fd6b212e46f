"""One target syntax (android_bench/targets/spec.py) behind every CLI that names a target."""
from __future__ import annotations

import pytest

from android_bench.targets.spec import TargetSpec, TargetSpecError, parse_target_list


@pytest.mark.parametrize("text,kind,cpu,device,ident", [
    ("local", "local", None, None, "local"),
    ("qemu", "qemu", "cortex-a76", None, "qemu:cortex-a76"),
    (" QEMU:Cortex-A72 ", "qemu", "cortex-a72", None, "qemu:cortex-a72"),
    ("ssh", "ssh", None, None, "ssh"),
    ("ssh:pi5", "ssh", None, "pi5", "ssh:pi5"),
    ("adb:pixel-7", "adb", None, "pixel-7", "adb:pixel-7"),
])
def test_parse_and_format_round_trip(text, kind, cpu, device, ident):
    t = TargetSpec.parse(text)
    assert (t.kind, t.cpu, t.device, t.format(), str(t)) == (kind, cpu, device, ident, ident)
    assert TargetSpec.parse(t.format()) == t
    assert t.slug == ident.replace(":", "-") and t.emulated == (kind == "qemu")
    assert t.unit == ("instructions" if kind == "qemu" else "ms")


@pytest.mark.parametrize("text,devices,needle", [
    ("qemu:cortex-z9", True, "--targets: 'qemu:cortex-z9': unknown qemu cpu 'cortex-z9'"),
    ("gpu", True, "'gpu' is not a target (local, qemu:<cpu>"),
    ("ssh:../x", True, "'../x' is not a device name"),
    ("ssh:pi5", False, "ssh or adb with the device's flags"),
    ("local:x", True, "'local:x' is not a target"),
])
def test_bad_targets_are_one_line_errors(text, devices, needle):
    with pytest.raises(TargetSpecError) as e:
        TargetSpec.parse(text, devices=devices)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_list_refuses_duplicates_and_empty():
    assert [t.id for t in parse_target_list("local, qemu:cortex-a53")] == ["local",
                                                                          "qemu:cortex-a53"]
    with pytest.raises(TargetSpecError, match="'qemu:cortex-a76' given twice"):
        parse_target_list("qemu,qemu:cortex-a76")
    with pytest.raises(TargetSpecError, match="no target given"):
        parse_target_list(" , ")


def test_every_cli_parses_with_the_one_home():
    from android_bench.cli import command, target_spec
    from android_bench.targets.base import BenchError
    from deploy.spec import SpecError, parse_target
    from quant.common import QuantError
    from quant.on_target import parse_on

    # android_bench: the new form, the older --cpu form, and both when they agree
    assert target_spec("qemu:cortex-a72", None) == target_spec("qemu", "cortex-a72") == \
        target_spec("qemu:cortex-a72", "cortex-a72") == TargetSpec.parse("qemu:cortex-a72")
    with pytest.raises(BenchError, match="name two cores"):
        target_spec("qemu:cortex-a53", "cortex-a72")
    with pytest.raises(BenchError, match="--cpu picks the emulated core"):
        target_spec("local", "cortex-a72")
    argv = command(["m.onnx"], "qemu", 3, 1, "o.json", "cortex-a53", python="py")
    assert argv[argv.index("--target") + 1] == "qemu:cortex-a53" and "--cpu" not in argv
    # deploy (with its INT8 recipe) and quant.evaluate --on read the same text the same way
    d = parse_target("qemu:cortex-a53")
    assert d.id == parse_on("qemu:cortex-a53").id == "qemu:cortex-a53"
    # no dot product on the A53: U8S8; the A76 (qemu alone) has it: S8S8
    assert (d.recipe().tag, parse_target("qemu").recipe().tag) == ("u8s8", "s8s8")
    with pytest.raises(SpecError, match="unknown qemu cpu"):
        parse_target("qemu:cortex-z9")
    with pytest.raises(QuantError, match="unknown qemu cpu"):
        parse_on("qemu:cortex-z9")
