"""Look at a deploy report in a real browser: headless Chromium -> PNG.

    python -m deploy.screenshot runs/latest/report.html [--out docs/report.png]
        [--width 1300] [--height 2400] [--browser /usr/bin/chromium]

Why: the report is meant to be looked at, so it is checked the way a person
sees it (layout, embedded plots actually decoding, tables not overflowing),
not only by grepping the HTML.

Chromium runs with --headless --no-sandbox --disable-gpu and no network or
profile side effects (--disable-background-networking --disable-component-update
--no-first-run, a throw-away --user-data-dir), under a time limit; the report is
self-contained (plots are base64 PNG), so nothing needs the network. Install it
with `apt-get install -y chromium` (Debian) if it is missing; CHROMIUM=/path
picks another binary.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_path, cli_entry, declare_inputs

PROG = "deploy.screenshot"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser(given: str | None = None) -> str:
    for c in ([given] if given else []) + [os.environ.get("CHROMIUM") or ""] + list(CANDIDATES):
        if c and (shutil.which(c) or Path(c).is_file()):
            return shutil.which(c) or c
    raise ArmqError("no Chromium found (apt-get install -y chromium, or CHROMIUM=/path/to/chrome)")


def screenshot(html: Path, out: Path, width: int = 1300, height: int = 2400,
               browser: str | None = None, timeout_s: float = 120) -> Path:
    html = Path(html).resolve()
    if not html.is_file():
        raise ArmqError(f"{html} not found")
    exe = find_browser(browser)
    with tempfile.TemporaryDirectory(prefix="armq-chromium-") as profile, atomic_path(out) as tmp:
        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", f"--screenshot={tmp}", html.as_uri()]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ArmqError(f"chromium did not finish within {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            last = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
            raise ArmqError(f"chromium failed (exit {proc.returncode}): "
                            f"{last[-1] if last else 'no screenshot written'}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("html", type=Path, help="report.html")
    p.add_argument("--out", type=Path, help="PNG to write (default: report.png beside the HTML)")
    p.add_argument("--width", type=int, default=1300)
    p.add_argument("--height", type=int, default=2400)
    p.add_argument("--browser", help="chromium binary (default: found on PATH)")
    a = p.parse_args(argv)
    out = a.out or a.html.with_suffix(".png")
    declare_inputs(a.html, outputs=[out])
    screenshot(a.html, out, a.width, a.height, a.browser)
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
