"""Benchmark targets: where runner.py runs. See base.py for the interface.

    local  - this machine's Python (subprocess)
    qemu   - aarch64 user-mode emulation with a private sysroot (emulated, not board latency)
    ssh    - a board over ssh          (android_bench/targets/ssh.py)
    adb    - an Android device over adb (android_bench/targets/adb.py)

ssh and adb are transports under one RemoteTarget (remote.py: the remote session,
the run with its pid file, the kill on timeout, the cleanup); adb's benchmark_model
mode reads its log with tflite_benchmark.py.
"""
from __future__ import annotations

import importlib

from .base import BenchError, Target, TargetOptions
from .spec import KINDS


def make_target(kind: str, options: TargetOptions | None = None) -> Target:
    """Import android_bench.targets.<kind> lazily and call its make_target(options)."""
    if kind not in KINDS:
        raise BenchError(f"unknown target '{kind}' (one of {', '.join(KINDS)})")
    try:
        mod = importlib.import_module(f"{__name__}.{kind}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{kind}":
            raise BenchError(f"target '{kind}' is not available in this checkout "
                             f"(android_bench/targets/{kind}.py missing)") from None
        raise
    factory = getattr(mod, "make_target", None)
    if factory is None:
        raise BenchError(f"android_bench/targets/{kind}.py has no make_target(options)")
    return factory(options or TargetOptions())
