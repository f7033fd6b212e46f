"""`python -m armq`: the same as the `armq` command (armq/cli.py)."""
from armq.cli import entry

if __name__ == "__main__":
    entry()
