"""The latency model: micro-benchmarked op-class throughputs, a per-layer roofline, and
the split of theory vs measured into named causes.

    graph.py       what an ONNX file runs: the runtime graph's nodes as op class + work
    roofline.py    pure arithmetic: fit constants on micro-benchmarks, predict, explain
    microbench.py  the single-op models and their measured table (cached JSON)
    report.py      the text table, the JSON and docs/latency_model.md

Host side only (it reads graphs with onnxruntime and quantizes micro-models with
armq's own PTQ); what runs on the targets is android_bench's runner, unchanged.
`python -m android_bench.latency_model` is the CLI.
"""
