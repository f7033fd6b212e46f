"""List every zoo model with its variant parameters: `python -m zoo.list [--json]`."""
from __future__ import annotations

import json
from typing import Sequence

from .clikit import make_parser
from .util import cli_entry


def describe() -> list[dict]:
    import zoo

    rows = []
    for name in zoo.list_models():
        e = zoo.get_entry(name)
        params = {}
        for k, p in e.params.items():
            params[k] = {"flag": p.cli_flag, "default": p.default, "help": p.help,
                         **({"choices": list(p.choices)} if p.choices else {}),
                         **({"range": list(p.bounds)} if p.bounds else {})}
        rows.append({"model": name, "family": e.family, "summary": e.summary, "paper": e.paper,
                     "params": params, "datasets": ["imagenet", "cifar10"]})
    return rows


def _param_text(d: dict) -> str:
    if "choices" in d:
        vals = "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in d["choices"])
    elif "range" in d:
        vals = f"{d['range'][0]:g}..{d['range'][1]:g}"
    else:
        vals = "any"
    return f"{d['flag']} {vals} (default {d['default']})"


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("zoo.list", description=__doc__)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["model"]) for r in rows)
    for r in rows:
        params = "; ".join(_param_text(d) for d in r["params"].values()) or "no variants"
        print(f"{r['model']:<{width}}  {r['summary']}")
        print(f"{'':<{width}}  {params}")
    print(f"\n{len(rows)} models; every one has --dataset imagenet|cifar10, --input-size, --num-classes")
    return 0


if __name__ == "__main__":
    cli_entry(main, "zoo.list")
