"""python -m android_bench: see android_bench/cli.py."""
from android_bench.cli import entry

if __name__ == "__main__":
    entry()
