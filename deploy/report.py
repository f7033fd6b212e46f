"""Render a deploy run: results.json -> report.md, report.html and plots/*.png beside it.

    python -m deploy.report runs/<timestamp>/results.json

The HTML is one self-contained file (plots embedded as base64 PNG); the
Markdown links the PNG files in plots/. Works on partial runs: whatever a
failed or interrupted stage did not produce is shown as missing, with why.
Emulated (QEMU) timings are labelled EMULATED wherever they appear. The report
opens with the decision (deploy.explain.headline): the configuration to ship per target,
linked to its table right below, then what got faster, by how much, what it cost in
accuracy. Numbers: deploy.analysis; tables: deploy.tables;
plots: deploy.plots; this module writes the Markdown and the HTML.
"""
from __future__ import annotations

import base64
import contextlib
import html
import json
from pathlib import Path
from typing import Iterator, Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_output, cli_entry, load_json, shown

from . import analysis as A
from . import explain as E
from . import paper
from .plots import PLOTS
from .tables import (BEST_NOTE, EMU, ON_TARGET_NOTE, ON_TARGET_TITLE, SHIP_ANCHOR, SHIP_TITLE,
                     WHY_NOTE, WHY_TITLE, best_table, fcount, fnum, int8_table, main_table,
                     on_target_table, stage_table, table8_table, why_blocks)
from .verdict import badge_text, run_badge

PROG = "deploy.report"


# ---- writers ------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;
color:#222;padding:0 16px;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;
padding-bottom:3px}h3{font-size:14px;margin:14px 0 4px}
table{border-collapse:collapse;font-size:12px;margin:8px 0;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f4f6;position:sticky;top:0}
tr.fail td{background:#fde8e8}tr.missing td{color:#888}tr.emu td{background:#fff8e6}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff}
.complete{background:#2e7d32}.failed,.killed{background:#c62828}.interrupted{background:#ef6c00}
.partial{background:#b26a00}
.running{background:#1565c0}.emu-banner{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;
border-radius:6px;margin:12px 0;font-size:13px}.fail-box{background:#fde8e8;border:1px solid #e57373;
padding:8px 12px;border-radius:6px;margin:12px 0;font-size:13px}
figure{margin:14px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.meta{color:#555;font-size:12px}
.headline{background:#eef5ee;border:1px solid #9cc79c;padding:8px 12px;border-radius:6px;
margin:10px 0;font-size:14px}.headline p{margin:2px 0}
ul.explain li{margin:2px 0;font-size:13px}.small{font-size:11px;color:#666}
code{background:#f3f4f6;padding:0 3px;border-radius:3px}
"""


def _esc(s) -> str:
    return html.escape(str(s))


def _html_table(head, body, cls=None) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, r in enumerate(body):
        c = (cls[i] if cls else "") or ""
        out.append(f"<tr class='{c}'>" + "".join(f"<td>{_esc(x)}</td>" for x in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _md_table(head, body) -> str:
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in body]
    return "\n".join(lines)


_SECTIONS: dict[str, type] = {"run": dict, "config": dict, "models": dict, "bench_files": dict,
                              "compare": dict, "report": dict, "targets": list, "stages": list,
                              "notes": list}
_ITEMS = {"models": dict, "targets": dict, "stages": dict}
_STAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "kind": (str,), "model": (str,), "target": (str,), "status": (str,),
    "started": (str,), "reason": (str,), "log": (str,), "outputs": (dict,),
    "seconds": (int, float), "cpu_seconds": (int, float)}


def check_shape(doc: dict, rp: Path) -> None:
    """The one shape check of a results.json before any table reads it: a hand-edited or
    foreign file is a one-line error naming the bad field, not an internal error later."""
    def bad(where: str, v: object, want: str) -> ArmqError:
        return ArmqError(f"{shown(rp)}: {where} is a {type(v).__name__}, not {want} "
                         f"(not a deploy results file)")
    for key, typ in _SECTIONS.items():
        v = doc.get(key)
        if v is not None and not isinstance(v, typ):
            raise bad(f"'{key}'", v, "an object" if typ is dict else "a list")
    for key, typ in _ITEMS.items():
        items = doc.get(key) or ()
        for i, item in (items.items() if isinstance(items, dict) else enumerate(items)):
            if not isinstance(item, typ):
                raise bad(f"{key}[{shown(i)!r}]" if isinstance(i, str) else f"{key}[{i}]", item,
                          "an object")
    for i, st in enumerate(doc.get("stages") or ()):
        for f, types in _STAGE_FIELDS.items():
            v = st.get(f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
                raise bad(f"stages[{i}].{f}", v, " or ".join(t.__name__ for t in types))


@contextlib.contextmanager
def fields_of(rp: Path) -> Iterator[None]:
    """Reading a results.json's fields (report, rundiff, zoo_results): check_shape vets the
    sections; a field deeper down of the wrong type (a hand-edited file, an artifact entry
    that is a string) still ends here, as one line naming the file, not an internal error."""
    try:
        yield
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ArmqError(f"{shown(rp)}: a field has an unexpected type or value ({type(e).__name__}"
                        f"{': ' + first if first else ''}); is it a results.json written by "
                        f"`python -m deploy`? (--debug shows where)") from e


def load_results(rp: Path) -> dict:
    """A deploy run's results.json, read with bounded size and depth and shape-checked:
    every failure is one line naming the file."""
    doc = load_json(rp, "results file")
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("armq-deploy/"):
        raise ArmqError(f"{rp} is not a deploy results file (format armq-deploy/1)")
    check_shape(doc, rp)
    return doc


def render(results_path: str | Path) -> Path:
    """Write report.md, report.html and plots/ beside results.json; returns the HTML path."""
    rp = Path(results_path)
    doc = load_results(rp)
    out_dir = rp.parent
    plot_dir = out_dir / "plots"
    pngs: list[tuple[str, bytes, str]] = []
    for name, fn, caption in PLOTS:
        try:
            data = fn(doc)
        except Exception as e:  # noqa: BLE001 - one plot failing must not lose the report
            data = None
            caption += f" (plot failed: {type(e).__name__}: {e})"
        if data:
            plot_dir.mkdir(exist_ok=True)
            with atomic_output(plot_dir / f"{name}.png", "wb") as f:
                f.write(data)
            pngs.append((name, data, caption))
    with fields_of(rp):
        md = build_md(doc, pngs)
        htm = build_html(doc, pngs)
    with atomic_output(out_dir / "report.md", "w") as f:
        f.write(md)
    with atomic_output(out_dir / "report.html", "w") as f:
        f.write(htm)
    return out_dir / "report.html"


T8_TITLE = "ShuffleNet Table 8: MAC-ratio theory vs measured speed-up over the baseline"
I8_NOTE = ("Theory here is INT8's bit-width bound: 4x (32/8-bit operands on the same MACs), not "
           "the MAC-ratio theory of the Table 8 section. Speed-up = FP32 / INT8 median latency on "
           "real CPUs; on QEMU targets the guest-instruction ratio (emulated milliseconds are "
           "emulation time, not a speed-up).")


def _cross_check(doc: dict) -> list[str]:
    """What the compare stage's output (bench/<target>/compare.json) says about the table."""
    n, bad = A.compare_check(doc)
    out = [f"Cross-check: android_bench.compare (the compare stage, bench/<target>/compare.json) "
           f"gives the same speed-up for {n} INT8/FP32 pair{'s' if n != 1 else ''}."] if n else []
    return out + [f"MISMATCH with the compare stage: {x}" for x in bad]


def _t8_note() -> str:
    return (f"Paper: {paper.CITATION}. FP32 models only, so the theory is the MAC ratio alone "
            f"(no bit-width factor); efficiency = speed-up / MAC ratio; the paper's rule of thumb: "
            f"{paper.RULE_OF_THUMB}.")


def _headline(doc: dict) -> list[tuple[str, str]]:
    """The headline lines as (label, text)."""
    return [tuple(x.split(": ", 1)) for x in E.headline(doc)]  # type: ignore[misc]


def _title(doc: dict) -> str:
    t = A.g(doc, "config", "title")
    if t:
        return str(t)
    names = [A.short_name(k, m) for k, m in A.models(doc).items()]
    return "armq deploy: " + (", ".join(names[:4]) + (" ..." if len(names) > 4 else "") or "run")


def _sections(doc: dict):
    """Shared content: (kind, payload) items both writers render."""
    run = doc.get("run") or {}
    items = []
    emu_t = [t["id"] for t in A.targets(doc) if t.get("emulated")]
    if emu_t:
        items.append(("emu", f"{', '.join(emu_t)} ran under QEMU user-mode emulation: their "
                      f"milliseconds are EMULATED (emulation time on this host, FP32 "
                      f"disproportionately slow), not board latency. Compare their guest "
                      f"instruction counts, which are deterministic."))
    busy = busy_note(doc)
    if busy:
        items.append(("busy", busy))
    fails = [s for s in doc.get("stages") or [] if s.get("status") in ("failed", "interrupted")]
    if fails:
        items.append(("fail", [f"{s['kind']}{' ' + s['target'] if s.get('target') else ''}"
                               f"{' (' + s['model'] + ')' if s.get('model') else ''}: "
                               f"{s['status']}: {s.get('reason')}" for s in fails]))
    if run.get("status") == "running":
        items.append(("fail", ["this run has not finished (partial results.json)"]))
    elif run.get("status") == "killed":
        items.append(("fail", ["deploy was killed (SIGKILL or out of memory): this run did not "
                               "finish (partial results.json)"]))
    return items


def busy_note(doc: dict) -> str | None:
    """A warning when local timings were taken on a loaded machine."""
    cpus = A.g(doc, "run", "host", "cpus") or 1
    # timed on this machine: local benchmarks and the profile (not QEMU, boards or phones)
    loads = [x for s in doc.get("stages") or [] if s.get("kind") in ("bench", "opprofile")
             and s.get("target") in (None, "local")
             for x in ((s.get("outputs") or {}).get("load_avg_before"),
                       (s.get("outputs") or {}).get("load_avg_after")) if isinstance(x, (int, float))]
    if not loads:
        start = A.g(doc, "run", "host", "load_avg")
        loads = [start[0]] if start else []
    if not loads or max(loads) <= cpus:
        return None
    return (f"local timings were taken on a busy machine (load average up to {max(loads):.1f} on "
            f"{cpus} CPUs): wall-clock latencies, their ratios and the per-op profile are "
            f"inflated and noisy (see the CI widths). QEMU instruction counts are not affected.")


def _meta_lines(doc: dict) -> list[str]:
    run = doc.get("run") or {}
    host = run.get("host") or {}
    cfg = doc.get("config") or {}
    lines = [f"run {run.get('id', '?')}: {badge_text(doc)}, started {run.get('started', '?')}, "
             f"wall {fnum(run.get('wall_s'), 0)} s",
             f"host: {host.get('cpu', '?')} ({host.get('cpus', '?')} CPUs, {host.get('machine', '?')}); "
             f"load average at start {', '.join(f'{x:.1f}' for x in host.get('load_avg') or []) or '?'}",
             f"command: {' '.join(run.get('command') or [])}",
             f"targets: {', '.join(cfg.get('targets') or [])}; timed runs {_per_target(cfg.get('runs'))}, "
             f"warm-up {_per_target(cfg.get('warmup'))}; accuracy on "
             f"{cfg.get('limit_eval') or 'the full test set'}{' images' if cfg.get('limit_eval') else ''}"
             + (f"; baseline {doc.get('baseline')}" if doc.get("baseline") else "")]
    where = _measured_where(doc)
    if where:
        lines.append(f"measured on: {where}")
    for n in doc.get("notes") or []:
        lines.append(f"note: {n}")
    return lines


def _measured_where(doc: dict) -> str:
    """Where each target's figures came from (node, and device of an inventory), e.g.
    'local: vm; qemu:cortex-a76: a76-1@vm, a76-2@vm' (empty for runs before it was recorded)."""
    per: dict[str, set[str]] = {}
    for m in (doc.get("models") or {}).values():
        for target, w in (m.get("measured_on") or {}).items():
            if isinstance(w, dict) and w.get("node"):
                per.setdefault(str(target), set()).add(
                    f"{w['device']}@{w['node']}" if w.get("device") else str(w["node"]))
    return "; ".join(f"{t}: {', '.join(sorted(v))}" for t, v in sorted(per.items()))


def _per_target(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {x}" for k, x in v.items())
    return str(v)


def _model_blurbs(doc: dict) -> list[tuple[str, str, list[str]]]:
    out = []
    for tag, m in A.models(doc).items():
        w = m.get("weights") or {}
        cost = m.get("cost") or {}
        head = (f"{fcount(cost.get('macs'))} MACs, {fcount(cost.get('params'))} params, "
                f"input {cost.get('input_size', '?')} px; weights: {w.get('kind', '?')}"
                + (f" ({w.get('source')})" if w.get("source") else ""))
        out.append((f"{A.short_name(tag, m)}  ({tag})", head, E.explain(doc, tag)))
    return out


def build_md(doc: dict, pngs) -> str:
    L = [f"# {_title(doc)}", "", f"**Run:** {badge_text(doc)}  "]
    bt = best_table(doc)
    link = f" ([table](#{SHIP_ANCHOR}))" if bt else ""
    L += [f"**{a}:** {b}{link if a == 'Ship' else ''}  " for a, b in _headline(doc)] + [""]
    if bt:
        L += [f"## {SHIP_TITLE}", "", BEST_NOTE, "", _md_table(*bt), ""]
    L += [f"- {x}" for x in _meta_lines(doc)] + [""]
    for kind, payload in _sections(doc):
        if kind == "emu":
            L += [f"> **{EMU}:** {payload}", ""]
        elif kind == "busy":
            L += [f"> **Busy machine:** {payload}", ""]
        else:
            L += ["> **Failed or interrupted stages** (finished stages are kept):"] + [f"> - {x}" for x in payload] + [""]
    L += ["## What the numbers say", ""]
    for title, head, sentences in _model_blurbs(doc):
        L += [f"### {title}", "", f"*{head}*", ""] + [f"- {s}" for s in sentences] + [""]
    L += ["## Plots", ""]
    for name, _, cap in pngs:
        L += [f"![{name}](plots/{name}.png)", "", f"*{cap}*", ""]
    L += ["## Results (model x format x precision x target)", ""]
    head, body, _ = main_table(doc)
    L += [_md_table(head, body), ""]
    ot = on_target_table(doc)
    if ot:
        L += [f"## {ON_TARGET_TITLE}", "", ON_TARGET_NOTE, "", _md_table(*ot), ""]
    t8 = table8_table(doc)
    if t8:
        L += [f"## {T8_TITLE}", "", f"{_t8_note()} Paper figures and their provenance: "
              "deploy/paper.py.",
              "",
              _md_table(*t8), ""]
    i8 = int8_table(doc)
    if i8:
        L += ["## INT8 vs FP32", "", I8_NOTE, "", _md_table(*i8), ""]
        L += [f"*{x}*" for x in _cross_check(doc)] + [""]
    why = why_blocks(doc)
    if why:
        L += [f"## {WHY_TITLE}", "", WHY_NOTE, ""]
        for title, lines, table in why:
            L += [f"### {title}", ""] + [f"- {x}" for x in lines] + [""]
            L += [_md_table(*table), ""] if table else []
    head, body, _ = stage_table(doc)
    L += ["## Stages", "", _md_table(head, body), ""]
    L += ["---", "Generated by `python -m deploy` (armq). Definitions: " + A.DEFINITIONS]
    return "\n".join(L) + "\n"


def build_html(doc: dict, pngs) -> str:
    badge = run_badge(doc)
    bt = best_table(doc)
    link = f" (<a href='#{SHIP_ANCHOR}'>table</a>)" if bt else ""
    H = ["<!doctype html><html><head><meta charset='utf-8'>",
         f"<title>{_esc(_title(doc))}</title><style>{CSS}</style></head><body>",
         f"<h1>{_esc(_title(doc))} <span class='badge {_esc(badge)}'>{_esc(badge_text(doc))}"
         "</span></h1>",
         "<div class='headline' id='headline'>" + "".join(
             f"<p><b>{_esc(a)}:</b> {_esc(b)}{link if a == 'Ship' else ''}</p>"
             for a, b in _headline(doc)) + "</div>"]
    if bt:
        H.append(f"<h2 id='{SHIP_ANCHOR}'>{_esc(SHIP_TITLE)}</h2>"
                 f"<p class='small'>{_esc(BEST_NOTE)}</p>" + _html_table(*bt))
    H += [f"<div class='meta'>{_esc(x)}</div>" for x in _meta_lines(doc)]
    for kind, payload in _sections(doc):
        if kind == "emu":
            H.append(f"<div class='emu-banner'><b>{EMU}:</b> {_esc(payload)}</div>")
        elif kind == "busy":
            H.append(f"<div class='emu-banner'><b>Busy machine:</b> {_esc(payload)}</div>")
        else:
            H.append("<div class='fail-box'><b>Failed or interrupted stages</b> (finished stages "
                     "are kept):<ul>"
                     + "".join(f"<li>{_esc(x)}</li>" for x in payload) + "</ul></div>")
    H.append("<h2>What the numbers say</h2>")
    for title, head, sentences in _model_blurbs(doc):
        H.append(f"<h3>{_esc(title)}</h3><div class='small'>{_esc(head)}</div><ul class='explain'>"
                 + "".join(f"<li>{_esc(s)}</li>" for s in sentences) + "</ul>")
    H.append("<h2>Plots</h2>")
    if not pngs:
        H.append("<p class='small'>No plot: no stage produced numbers to draw.</p>")
    for name, data, cap in pngs:
        b64 = base64.b64encode(data).decode("ascii")
        H.append(f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64,{b64}'>"
                 f"<figcaption>{_esc(cap)}</figcaption></figure>")
    head, body, cls = main_table(doc)
    H.append("<h2>Results (model x format x precision x target)</h2>")
    H.append(_html_table(head, body, cls))
    ot = on_target_table(doc)
    if ot:
        H.append(f"<h2 id='on-target'>{_esc(ON_TARGET_TITLE)}</h2>"
                 f"<p class='small'>{_esc(ON_TARGET_NOTE)}</p>" + _html_table(*ot))
    t8 = table8_table(doc)
    if t8:
        H.append(f"<h2>{_esc(T8_TITLE)}</h2>")
        H.append(f"<p class='small'>{_esc(_t8_note())} Paper figures and their provenance: "
                 "deploy/paper.py.</p>")
        H.append(_html_table(*t8))
    i8 = int8_table(doc)
    if i8:
        H.append(f"<h2>INT8 vs FP32</h2><p class='small'>{_esc(I8_NOTE)}</p>" + _html_table(*i8))
        H += [f"<p class='small'>{_esc(x)}</p>" for x in _cross_check(doc)]
    why = why_blocks(doc)
    if why:
        H.append(f"<h2 id='why-int8'>{_esc(WHY_TITLE)}</h2><p class='small'>{_esc(WHY_NOTE)}</p>")
        for title, lines, table in why:
            H.append(f"<h3>{_esc(title)}</h3><ul class='explain'>"
                     + "".join(f"<li>{_esc(x)}</li>" for x in lines) + "</ul>")
            if table:
                H.append(_html_table(*table))
    head, body, cls = stage_table(doc)
    H.append("<h2>Stages</h2>" + _html_table(head, body, cls))
    H.append("<p class='small'>Generated by <code>python -m deploy</code> (armq). Definitions: "
             + _esc(A.DEFINITIONS) + "</p>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("results", type=Path, help="runs/<timestamp>/results.json")
    a = p.parse_args(argv)
    out = render(a.results)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
