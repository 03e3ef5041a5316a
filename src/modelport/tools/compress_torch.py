"""``modelport optimize PKG --quantize int8 / --prune 0.5`` on a torch package.

Quantization is PyTorch's dynamic quantization: ``torch.ao.quantization.quantize_dynamic``
swaps the model's ``nn.Linear`` and ``nn.LSTM`` modules for INT8 ones (weights stored as INT8,
activations quantized on the fly). It needs those modules, so it takes a package of a whole
module saved with ``torch.save(model)`` (``.pth``): TorchScript and ``torch.export`` programs
keep compiled code, not modules it could swap.

Pruning zeroes the given share of each ``nn.Linear`` layer's weights with the smallest
magnitude (``torch.nn.utils.prune``'s L1 unstructured method), in a ``.pth`` module or in a
TorchScript file's Linear layers. Both may be combined (pruned first, then quantized).

The copy is written beside the original (``model.int8.pth``, ``model.pruned.pt`` …, with its
sidecar), judged by :mod:`modelport.tools.compress`, and recorded in the manifest as
``compressed``; it is served (``runtime="auto"``) only when its metric drop is within
``max_metric_drop``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from modelport.errors import ConfigError
from modelport.package import Package, open_package, write_manifest
from modelport.runtimes import load_runtime, require
from modelport.runtimes.torch import TorchRuntime, open_module, quiet, sidecar_path
from modelport.tools.compress import (
    DEFAULT_MAX_DROP,
    CompressionReport,
    check_drop,
    evaluation,
    measure,
)

__all__ = ["compress"]


def compress(root: Path, *, quantize: bool = False, prune: float | None = None,
             data: Path | None = None, target: str | None = None,
             max_metric_drop: float = DEFAULT_MAX_DROP) -> CompressionReport:
    """Quantize and/or prune the torch package at ``root``, judge the copy, record it."""
    check_drop(max_metric_drop)
    if prune is not None and not 0 < prune < 1:
        raise ConfigError(f"--prune is the share of each Linear layer's weights set to zero: "
                          f"between 0 and 1, got {prune}")
    if not quantize and prune is None:
        raise ConfigError("nothing to do: pass --quantize int8 and/or --prune SHARE")
    pkg = open_package(root)
    if pkg.manifest.flavor != "torch":
        raise ConfigError(f"--prune works on torch models' Linear layers; '{pkg.manifest.name}' "
                          f"is a {pkg.manifest.flavor} model")
    native = load_runtime(pkg.artifact_path, "torch", signature=pkg.signature)
    assert isinstance(native, TorchRuntime)
    module, sparsity = _compressed(pkg, native, quantize, prune)
    steps = ([] if prune is None else [("pruned", f"prune {prune:g}")]) + \
        ([("int8", "int8")] if quantize else [])
    method = " + ".join(label for _, label in steps)
    name = ".".join(["model", *(tag for tag, _ in steps)]) + pkg.artifact_path.suffix
    with tempfile.TemporaryDirectory(prefix=".compress-", dir=root) as tmp:
        staged = Path(tmp) / name
        _save(module, native.kind, staged)
        shutil.copyfile(sidecar_path(pkg.artifact_path), sidecar_path(staged))
        after = load_runtime(staged, "torch", signature=pkg.signature)
        latency, metric = measure(native, after, evaluation(pkg, data, target))
        report = CompressionReport(method, name, "torch", pkg.artifact_path.stat().st_size,
                                   staged.stat().st_size, latency, metric, max_metric_drop,
                                   sparsity)
        _drop_previous(pkg)
        for path in (staged, sidecar_path(staged)):
            os.replace(path, root / path.name)
    write_manifest(pkg, compressed=report.record())
    return report


def _compressed(pkg: Package, native: TorchRuntime, quantize: bool,
                prune: float | None) -> tuple[Any, float | None]:
    if native.kind == "export":
        raise ConfigError("a torch.export program (.pt2) holds no Linear/LSTM modules to prune "
                          "or quantize; pack the module itself (torch.save(model, 'model.pth'))")
    if quantize and native.kind != "eager":
        raise ConfigError("quantize_dynamic swaps nn.Linear/nn.LSTM modules, which TorchScript "
                          "no longer holds; pack the module itself (torch.save(model, "
                          "'model.pth')) to quantize it (the INT8 copy is saved the same way)")
    torch = require("torch", "torch")
    if native.kind == "eager":
        module = copy.deepcopy(native.module)
    else:
        module, _ = open_module(pkg.artifact_path)
    sparsity = None if prune is None else _prune(torch, module, prune)
    if quantize:
        module = _quantize(torch, module)
    return module, sparsity


def _prune(torch: Any, module: Any, share: float) -> float:
    """Zero the ``share`` smallest-magnitude weights of every Linear layer; the zero share."""
    prune = require("torch.nn.utils.prune", "torch")
    layers = [m for m in module.modules() if _is_linear(torch, m)]
    if not layers:
        raise ConfigError("nothing to prune: the model has no nn.Linear layer")
    zeros = total = 0
    for layer in layers:
        weight = layer.weight
        mask = prune.L1Unstructured(share).compute_mask(weight, torch.ones_like(weight))
        with torch.no_grad():
            weight.mul_(mask)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total


def _is_linear(torch: Any, module: Any) -> bool:
    if isinstance(module, torch.jit.RecursiveScriptModule):
        return bool(module.original_name == "Linear")
    return isinstance(module, torch.nn.Linear)


def _quantize(torch: Any, module: Any) -> Any:
    """``quantize_dynamic`` on the Linear and LSTM layers (INT8 weights)."""
    layers = {torch.nn.Linear, torch.nn.LSTM}
    if not any(type(m) in layers for m in module.modules()):
        raise ConfigError("nothing to quantize: the model has no nn.Linear or nn.LSTM layer")
    with quiet():
        return torch.ao.quantization.quantize_dynamic(module, layers, dtype=torch.qint8)


def _save(module: Any, kind: str, path: Path) -> None:
    torch = require("torch", "torch")
    with quiet():
        if kind == "script":
            torch.jit.save(module, str(path))
        else:
            torch.save(module, str(path))


def _drop_previous(pkg: Package) -> None:
    """An earlier compressed copy (and its sidecar) goes: the manifest records one at a time."""
    earlier = pkg.manifest.compressed
    if earlier is None:
        return
    path = pkg.root / earlier["artifact"]
    for old in (path, sidecar_path(path)):
        old.unlink(missing_ok=True)
