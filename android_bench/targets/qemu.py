"""The `qemu` target: runner.py under QEMU aarch64 user-mode emulation.

    qemu-aarch64 -L <cache>/views/<cpu> -cpu <cpu> -plugin armq_icount.so,out=... \\
        <view>/usr/bin/python3.11 runner.py --markers ...

with Debian's arm64 Python 3.11 and aarch64 wheels from the sysroot that
android_bench.qemu_setup builds (once, cached). What it measures:

* correctness of the aarch64 kernels the runtimes pick for that CPU (outputs),
* guest instructions per inference, counted by the armq_icount TCG plugin only
  between the runner's markers (start-up excluded). Deterministic: the process runs
  with address-space randomization off, PYTHONHASHSEED=0 and one BLAS thread, so
  the same model and inputs give the same counts run to run.

Its milliseconds are EMULATION time, not board latency: QEMU emulates floating
point in software, so FP32 is disproportionately slow. Every result says so
(target.emulated, timing_ms.clock = "emulated", a warning).
"""
from __future__ import annotations

import ctypes
import statistics
import tempfile
from pathlib import Path
from typing import ClassVar

from .. import qemu_setup
from .base import BenchConfig, ModelSpec, RunnerFailed, Target, TargetOptions, TargetUnavailable
from .local import LocalTarget, host_cpu_model

DEFAULT_CPU = "cortex-a76"
EMULATED_NOTE = ("emulated: milliseconds are QEMU TCG emulation time on the host, not board "
                 "latency (FP32 is disproportionately slow); compare instruction counts")
_ADDR_NO_RANDOMIZE = 0x0040000


def parse_icount(path: Path) -> dict:
    """Read the plugin's output: regions in order, total, guest threads."""
    regions: list[int] = []
    own: list[int] = []
    total = threads = unbalanced = None
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"regions": regions, "own": own, "total": None, "threads": None, "complete": False}
    for line in lines:
        f = line.split()
        if f[:1] == ["region"] and len(f) >= 3:
            regions.append(int(f[2]))
            own.append(int(f[4]) if len(f) >= 5 and f[3] == "own" else int(f[2]))
        elif f[:1] == ["total"] and len(f) >= 2:
            total = int(f[1])
            kv = dict(zip(f[2::2], f[3::2]))
            threads = int(kv.get("threads", 0)) or None
            unbalanced = int(kv.get("unbalanced", 0))
    return {"regions": regions, "own": own, "total": total, "threads": threads,
            "unbalanced": unbalanced, "complete": total is not None}


def instruction_summary(ic: dict, markers: dict | None, cpu: str, threads: int) -> dict:
    """Map plugin regions onto first / warm-up / timed inferences (runner.py order)."""
    regions = ic["regions"]
    if not markers:
        raise RunnerFailed("runner result has no marker section (runner.py out of date?)")
    w0, nw = markers["warmup"]
    t0, nt = markers["timed"]
    if len(regions) < t0 + nt:
        raise RunnerFailed(f"instruction-count plugin saw {len(regions)} inferences, "
                           f"expected {t0 + nt}")
    timed = regions[t0:t0 + nt]
    med = statistics.median(timed)
    out = {"source": "qemu TCG plugin armq_icount (guest instructions between runner markers)",
           "cpu": cpu, "per_inference": int(med) if float(med).is_integer() else med,
           "first": regions[0], "warmup": regions[w0:w0 + nw], "timed": timed,
           "min": min(timed), "max": max(timed),
           "spread_pct": round(100.0 * (max(timed) - min(timed)) / med, 4) if med else 0.0,
           "process_total": ic["total"],
           "outside_inferences": (ic["total"] - sum(regions)) if ic["total"] is not None else None,
           "guest_threads": ic["threads"],
           # instructions of threads other than the one running the inference
           "other_threads_timed": sum(ic["regions"][i] - ic["own"][i]
                                      for i in range(t0, t0 + nt)) if ic.get("own") else None}
    if threads > 1:
        out["note"] = ("several runtime threads: counts include their spinning and are not "
                       "reproducible; use --threads 1 for comparisons")
    return out


class QemuTarget(LocalTarget):
    kind: ClassVar[str] = "qemu"
    emulated: ClassVar[bool] = True
    default_timeout_s: ClassVar[float] = 3600.0
    default_warmup: ClassVar[int] = 1
    default_runs: ClassVar[int] = 5

    def __init__(self, options: TargetOptions | None = None):
        options = options or TargetOptions()
        self.cpu = options.cpu or DEFAULT_CPU
        if self.cpu not in qemu_setup.CPUS:
            raise TargetUnavailable(f"unknown --cpu '{self.cpu}' for qemu "
                                    f"(one of {', '.join(qemu_setup.CPUS)})")
        self.cpu_arg = qemu_setup.CPUS[self.cpu][0]
        self.icount = bool(options.extra.get("icount", True))
        self.sysroot: qemu_setup.Sysroot | None = None
        self._personality = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._personality = libc.personality
            self._personality.restype = ctypes.c_int
            self._personality.argtypes = [ctypes.c_ulong]
        except (OSError, AttributeError):
            pass

    def _ensure(self, tflite_runtime: bool = False, mnn: bool = False,
                executorch: bool = False) -> qemu_setup.Sysroot:
        try:
            self.sysroot = qemu_setup.ensure(cpus=[self.cpu], tflite_runtime=tflite_runtime,
                                             plugin=self.icount, progress=self.progress, mnn=mnn,
                                             executorch=executorch)
        except qemu_setup.QemuSetupError as e:
            if executorch:   # the base is ready (check()): only the .pte models fail
                raise RunnerFailed(f"no ExecuTorch runner for QEMU: {e} (it is built once, with "
                                   f"network: python -m android_bench.qemu_setup --executorch)"
                                   ) from None
            raise TargetUnavailable(str(e)) from None
        return self.sysroot

    def check(self) -> None:
        self._ensure()

    def describe(self) -> dict:
        d = {"kind": self.kind, "emulated": True, "cpu": self.cpu, "qemu_cpu": self.cpu_arg,
             "host_cpu": host_cpu_model(), "note": EMULATED_NOTE}
        if self.sysroot:
            q = self.sysroot.manifest.get("qemu", {})
            d.update(qemu=q.get("version"), sysroot=str(self.sysroot.root),
                     icount=bool(self.icount and self.sysroot.plugin))
        return d

    def tag(self) -> str:
        return f"qemu-{self.cpu}"

    def workdir(self):
        # Fixed-length names under /tmp: the guest sees its working folder only through
        # getcwd (onnxruntime makes the model path absolute), but its length shifts the
        # heap and with it a few hundred instructions per inference.
        return tempfile.TemporaryDirectory(prefix="armq-qemu-", dir="/tmp")

    def stage(self, model: ModelSpec, config: BenchConfig, work: Path) -> dict:
        """Link the files into the working folder and give the runner relative names, so
        its command line is the same on every run and machine."""
        (work / model.name).symlink_to(model.path)
        card = None
        if model.card:
            card = model.card.name if model.card.name != model.name else "card.json"
            (work / card).symlink_to(model.card)
        inputs = None
        if config.inputs:
            inputs = "inputs.npy"
            (work / inputs).symlink_to(Path(config.inputs).resolve())
        return {"model": model.name, "card": card, "inputs": inputs, "json": "result.json",
                "outputs": "outputs.npy" if config.save_outputs else None}

    @staticmethod
    def _runtime_of(config: BenchConfig, runner_args) -> str:
        """The runtime whose site folder the guest needs: `auto` for an .mnn model is mnn,
        for a .pte program executorch."""
        args = list(runner_args)
        model = args[args.index("--model") + 1] if "--model" in args else ""
        if config.runtime == "auto":
            for ext, runtime in ((".mnn", "mnn"), (".pte", "executorch")):
                if model.lower().endswith(ext):
                    return runtime
        return config.runtime

    def command(self, runner_args, config: BenchConfig, workdir: Path) -> list[str]:
        self._site_runtime = self._runtime_of(config, runner_args)
        pte = self._site_runtime == "executorch"
        sr = self._ensure(tflite_runtime=self._site_runtime == "tflite_runtime",
                          mnn=self._site_runtime == "mnn", executorch=pte)
        if pte:
            # executorch's Python runtime links libtorch, and PyPI's aarch64 torch is the
            # CUDA build: runner.py runs the program through libarmq_et.so (built on demand)
            runner_args = [*runner_args, "--et-lib", sr.et_lib]
        view = sr.view(self.cpu)
        runner = sr.install_runner()
        argv = [sr.qemu, "-L", str(view), "-cpu", self.cpu_arg, "-0", qemu_setup.GUEST_PYTHON]
        if self.icount and sr.plugin:
            argv += ["-plugin", f"{sr.plugin},out={workdir / 'icount.txt'},mode=tb"]
            if "--markers" not in runner_args:
                runner_args = [*runner_args, "--markers"]
        return argv + [str(view / qemu_setup.GUEST_PYTHON.lstrip("/")), runner, *runner_args]

    def environment(self, config: BenchConfig) -> dict:
        assert self.sysroot is not None
        n = str(config.threads)
        return {"PATH": "/usr/bin:/bin", "HOME": qemu_setup.GUEST_DIR, "LANG": "C.UTF-8",
                "TZ": "UTC",
                "PYTHONPATH": self.sysroot.site(getattr(self, "_site_runtime", config.runtime)),
                "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
                "ORT_DISABLE_TELEMETRY": "1", "OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n}

    def preexec(self):
        pers = self._personality
        if pers is None:
            return None

        def no_aslr():
            cur = pers(0xFFFFFFFF)
            if cur != -1:
                pers(cur | _ADDR_NO_RANDOMIZE)
        return no_aslr

    def check_exit(self, proc, model: ModelSpec, where: str) -> None:
        err = proc.stderr or ""
        if "Invalid ELF image" in err or "Could not open" in err and "ld-linux" in err:
            raise TargetUnavailable(f"qemu cannot start the sysroot's Python ({err.strip()}); "
                                    f"rebuild it: python -m android_bench.qemu_setup --rebuild")
        super().check_exit(proc, model, where)

    def post(self, result: dict, workdir: Path, config: BenchConfig) -> dict:
        result["emulated"] = True
        result["timing_ms"]["clock"] = "emulated"
        result["warnings"] = [EMULATED_NOTE] + list(result.get("warnings", []))
        if self.icount and self.sysroot and self.sysroot.plugin:
            ic = parse_icount(workdir / "icount.txt")
            if not ic["complete"]:
                raise RunnerFailed(f"{result['model']['file']} on {self.tag()}: the "
                                   f"instruction-count plugin wrote no summary")
            result["instructions"] = instruction_summary(ic, result.get("markers"), self.cpu,
                                                         config.threads)
        else:
            result["instructions"] = None
            result["warnings"].append("no instruction counts: qemu-aarch64 without plugin "
                                      "support (install Debian's qemu-user)")
        return result


def make_target(options: TargetOptions) -> Target:
    return QemuTarget(options)
