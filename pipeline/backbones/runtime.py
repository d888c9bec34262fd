"""Where a backbone runs and in which precision: ``backbone.device`` and ``backbone.precision``.

``device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
``precision``: ``fp32``, or ``bf16`` / ``fp16`` autocast. Weights stay in fp32 either way;
only the encoders' matmuls and convolutions run in the low precision (the references, CoOp
and its successors, cast CLIP's weights to fp16 instead). Encoders return fp32 features, so
logits, losses and optimiser states stay in fp32. ``bf16`` has fp32's exponent range and is
safe for training; ``fp16`` gradients can underflow, so a training loop must scale its loss
(``torch.amp.GradScaler``) under ``fp16``. ``fp16`` is refused on the CPU, where PyTorch's
fp16 kernels are slow and ``bf16`` does the same job.
"""

from __future__ import annotations

import warnings

import torch

from ..params import ParamError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(value: object) -> torch.device:
    """``backbone.device`` -> a concrete ``torch.device``; one that is not here is an error."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value) if isinstance(value, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ParamError(
            f"params.yaml: backbone.device = {value!r} must be auto, cpu, cuda or cuda:N"
        )
    if device.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= available:
            raise ParamError(
                f"params.yaml: backbone.device = {value!r}: this machine has {available} "
                "CUDA device(s); use auto or cpu"
            )
    return device


def check_precision(value: object, device: torch.device) -> str:
    if value not in PRECISIONS:
        raise ParamError(
            f"params.yaml: backbone.precision = {value!r} must be one of {list(PRECISIONS)}"
        )
    if value == "fp16" and device.type == "cpu":
        raise ParamError(
            "params.yaml: backbone.precision = 'fp16' needs a CUDA device; use bf16 on the CPU"
        )
    if value == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        # still correct, only emulated: slower than fp32, so say how to get the speed back
        warnings.warn(
            "params.yaml: backbone.precision = 'bf16', but this CPU has no native bf16 "
            "(AVX512-BF16 or AMX): it runs slower than fp32. Results stay those of bf16; "
            "-S backbone.precision=fp32 is faster here (and gives fp32's results).",
            stacklevel=2,
        )
    return str(value)


def cpu_has_native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
