"""Committed documents carry no path of the machine that wrote them: commands in docs must
run anywhere. The generators of docs/latency_model.md and docs/results.md show paths
relative to the run's folder, or as `<dir>/name` outside it (zoo.util.portable_arg)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import REPO

# /work/..., /home/..., /tmp/..., /root/..., /Users/... at the start of a path; an Android
# phone's /data/local/tmp/... (a device path the README documents) is not this machine's.
MACHINE_PATH = re.compile(r"(?<![\w./~-])/(?:work|home|tmp|root|Users|private/var)/[\w.-]")
SKIP_DIRS = {"runs", "artifacts", "node_modules", "build", "dist", "__pycache__"}


def _committed_docs() -> list[Path]:
    out = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
        out += [Path(root) / f for f in files if f.endswith(".md")]
    return out


def test_no_machine_paths_in_committed_docs():
    docs = _committed_docs()
    assert REPO / "README.md" in docs and REPO / "docs" / "latency_model.md" in docs \
        and REPO / "docs" / "results.md" in docs
    hits = [f"{p.relative_to(REPO)}:{n}: {m.group()}..."
            for p in docs for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            for m in MACHINE_PATH.finditer(line)]
    assert not hits, "machine paths in committed docs:\n" + "\n".join(hits)


def test_the_pattern_finds_machine_paths_and_spares_device_paths():
    assert MACHINE_PATH.search("--out /work/sweep_runs`") and MACHINE_PATH.search("(/tmp/x.json)")
    assert MACHINE_PATH.search("`--doc=/home/me/docs/a.md`")
    assert not MACHINE_PATH.search('python = "/data/local/tmp/py/bin/python3"')
    assert not MACHINE_PATH.search("docs/latency_model.md ../shared/data <dir>/runs")


def test_portable_arg():
    from zoo.util import portable_arg

    assert portable_arg("/work/repo/docs/x.md", "/work/repo") == "docs/x.md"
    assert portable_arg("/tmp/h/lm.json", "/work/repo") == "<dir>/lm.json"
    assert portable_arg("--out=/srv/runs", "/work/repo") == "--out=<dir>/runs"
    for word in ("zoo/x.onnx", "--out", "python -m deploy", "local,qemu:cortex-a76"):
        assert portable_arg(word, "/work/repo") == word


def test_generators_write_portable_commands():
    """The two generators of committed docs, given the absolute paths their runs had."""
    from android_bench.perfmodel.report import markdown
    from deploy.zoo_results import render

    md = markdown([], ["--doc", "/work/x/docs/latency_model.md", "--json", "/tmp/h/lm.json"],
                  base="/work/x")
    assert "--doc docs/latency_model.md --json <dir>/lm.json`" in md
    md, _ = render({"run": {"command": ["python -m deploy", "--sweep", "/work/x/deploy/zoo.toml",
                                        "--out", "/work/sweep_runs"], "repo": "/work/x"},
                    "models": {}})
    assert "`python -m deploy --sweep deploy/zoo.toml --out <dir>/sweep_runs`" in md
    assert not MACHINE_PATH.search(md)
