"""Print the first ```sh block under a README heading, so the README's examples are run
verbatim (tests/test_readme_own_model.py, scripts/install_check.sh).

    python scripts/readme_block.py README.md "## Your own model" > example.sh
"""
from __future__ import annotations

import sys
from pathlib import Path


def extract(readme: Path, heading: str) -> str:
    """The body of the first ```sh fence after the line `heading` (and before the next
    heading of any level)."""
    lines = Path(readme).read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise SystemExit(f"readme_block: no heading {heading!r} in {readme}") from None
    body: list[str] | None = None
    for line in lines[start + 1:]:
        if body is None:
            if line.startswith("#") and not line.startswith("#!"):
                break
            if line.strip() == "```sh":
                body = []
        elif line.strip() == "```":
            return "\n".join(body) + "\n"
        else:
            body.append(line)
    raise SystemExit(f"readme_block: no ```sh block under {heading!r} in {readme}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python scripts/readme_block.py README.md '## Heading'")
    sys.stdout.write(extract(Path(sys.argv[1]), sys.argv[2]))
