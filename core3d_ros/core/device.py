"""Torch device selection shared by the model back-ends."""
from __future__ import annotations


def resolve_device(device: str, param: str, error: type[Exception] = ValueError):
    """``auto`` -> CUDA when available, else CPU. Asking for CUDA where there is none raises
    ``error`` naming the parameter ``param`` to change."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise error(f"{param}={device!r} but CUDA is not available; use 'auto' or 'cpu'")
    return dev
