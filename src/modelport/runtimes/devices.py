"""Where a model runs: the ``--device`` a user asks for, and what each flavor makes of it.

``auto`` takes an accelerator when one is installed and usable, else the CPU, and logs what it
chose; ``cpu`` never touches an accelerator; ``cuda`` (or an explicit ONNX Runtime provider
list) is a promise: when it cannot be kept the model does not load, and the error says what is
missing — a server that silently ran on the CPU would miss its latency targets unnoticed.

Only the torch, ONNX and XGBoost flavors have accelerators; the others run on the CPU and refuse
an explicit ``cuda``. GPUs are counted through the CUDA driver itself (``libcuda``), so no
library is imported to find out there are none.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, get_args

from modelport.errors import ConfigError

if TYPE_CHECKING:
    from modelport.config import Settings

__all__ = ["CPU", "DEVICES", "Device", "Placement", "choose", "cuda_device_count",
           "placement_of", "refuse_accelerator"]

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
_log = logging.getLogger("modelport")


@dataclass(frozen=True)
class Placement:
    """What the user asked for: a device, and for ONNX models an ordered provider list
    (``("CUDAExecutionProvider", "CPUExecutionProvider")``) that overrides the device."""

    device: Device = "auto"
    providers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"--device: '{self.device}' is not one of {', '.join(DEVICES)}")


CPU = Placement("cpu")
"""Run on the CPU, whatever is installed (tools that compare answers use it)."""


def choose(placement: Placement, *, what: str, usable: bool, missing: str) -> str:
    """``"cuda"`` or ``"cpu"`` for a model (``what``) whose flavor can use a GPU when
    ``usable``; an explicit ``cuda`` that is not usable raises :class:`ConfigError` saying
    ``missing``; ``auto`` logs its choice."""
    if placement.device == "cpu":
        return "cpu"
    if placement.device == "cuda":
        if not usable:
            raise ConfigError(f"--device cuda: {what} cannot run on a GPU here: {missing}; "
                              "use --device auto (falls back to the CPU) or --device cpu")
        return "cuda"
    device = "cuda" if usable else "cpu"
    reason = "a GPU is usable" if usable else missing
    _log.info("%s runs on %s (--device auto: %s)", what, device, reason,
              extra={"fields": {"device": device}})
    return device


def refuse_accelerator(placement: Placement, *, what: str, flavor: str) -> None:
    """For flavors without an accelerator: an explicit ``cuda`` or provider list is an error."""
    if placement.device == "cuda" or placement.providers:
        asked = "--device cuda" if placement.device == "cuda" else "--providers"
        raise ConfigError(f"{asked}: {what} is a {flavor} model, which runs on the CPU only; "
                          "use --device auto or --device cpu")


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver or a GPU)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def placement_of(settings: Settings) -> Placement:
    """The placement ``--device`` and ``--providers`` ask for."""
    return Placement(settings.device, tuple(settings.providers))
