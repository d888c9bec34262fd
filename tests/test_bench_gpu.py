"""bench/bench_gpu.py runs end to end on the CPU with a tiny model (a smoke test, no timings)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"


def test_gpu_bench_smoke_on_the_cpu():
    command = [
        sys.executable,
        str(SCRIPT),
        "--model",
        "gram-tiny-vit",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--images",
        "4",
        "--image-size",
        "40",
        "30",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--train-batch",
        "2",
        "--classes",
        "2",
        "3",
        "--meta-tasks",
        "10",
        "--precisions",
        "fp32",
        "bf16",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| measurement | fp32 | bf16 |" in out
    for row in (
        "image_features / forward (target >= 70%)",
        "coop step, 2 classes (ms)",
        "cocoop step, 3 classes (ms)",
        "prograd step",
        "vpt step",
        "joint step",
        "GRAM coop meta-step, second order (ms)",
        "GRAM vpt meta-step, first order",
        "max logit error vs fp32 (cosine units)",
        "top-1 agreement with fp32",
    ):
        assert f"| {row}" in out, row
    assert "Table 1 estimate, GPU-hours" in out
    for row in (
        "CoOp",
        "CoOp + GRAM",
        "CoCoOp",
        "ProGrad",
        "VPT",
        "VPT + GRAM",
        "UNIGRAM",
        "total",
    ):
        assert f"\n| {row} | " in out, row
