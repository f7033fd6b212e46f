"""armq android_bench stage: benchmark exported models on ARM CPUs.

`python -m android_bench` (cli.py) runs runner.py through a target (targets/:
local, qemu, ssh, adb) and prints/writes the results; see README.md here.
"""
