"""What makes two runs comparable: the machine (CPU model and count, GPUs) and the versions of
the libraries that run the models. Runs with the same fingerprint form one history series; a
run from another fingerprint is never judged against it."""

from __future__ import annotations

import hashlib
import json

HARDWARE = ("cpu_model", "cpu_count_logical")
LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "onnx", "numpy")


def gpus(prov: dict) -> list[str]:
    gpu = prov.get("gpu") if isinstance(prov.get("gpu"), dict) else {}
    found = gpu.get("gpus") if isinstance(gpu.get("gpus"), list) else []
    return sorted(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in found)


def python_minor(version) -> str | None:
    if not version:
        return None
    return ".".join(str(version).split(".")[:2])


def machine(prov: dict) -> dict:
    """The fingerprint's parts, from a run's provenance."""
    versions = prov.get("versions") or {}
    return {**{k: prov.get(k) for k in HARDWARE}, "gpus": gpus(prov),
            "python": python_minor(prov.get("python")),
            "versions": {lib: versions[lib] for lib in LIBRARIES if lib in versions}}


def fingerprint(prov: dict) -> str:
    """A short stable hash of machine(prov)."""
    text = json.dumps(machine(prov), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(parts: dict) -> str:
    """One line: 'AMD EPYC 7B13 x2, no GPU, torch 2.13.0, onnxruntime 1.32.0, python 3.11'."""
    gpu = ", ".join(parts.get("gpus") or []) or "no GPU"
    libs = ", ".join(f"{k} {v}" for k, v in (parts.get("versions") or {}).items()
                     if k in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"))
    head = f"{parts.get('cpu_model') or '?'} x{parts.get('cpu_count_logical') or '?'}, {gpu}"
    return ", ".join(filter(None, (head, libs, f"python {parts.get('python')}"
                                   if parts.get("python") else None)))
