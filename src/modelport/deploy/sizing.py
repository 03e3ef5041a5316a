"""Container resources sized from the model's measured memory.

The CLI measures in a fresh process (``python -m modelport.deploy.sizing PACKAGE`` prints
JSON): peak RSS after importing the flavor's libraries and the server stack, and after loading
the model and answering its golden rows. :func:`resources_for` turns that into requests and
limits with headroom for request buffers and micro-batches.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemoryProfile", "Resources", "measure", "resources_for"]

MIB = 1024 * 1024
_STEP = 64 * MIB
_SERVER_OVERHEAD = 96 * MIB
"""uvicorn + FastAPI + prometheus-client, not imported by the measurement itself."""
_LIBRARY = {"sklearn": "sklearn", "onnx": "onnxruntime", "xgboost": "xgboost",
            "lightgbm": "lightgbm", "torch": "torch"}


@dataclass(frozen=True)
class MemoryProfile:
    """Peak resident memory (bytes) of a process that loaded the model."""

    baseline_bytes: int
    """After importing modelport and the flavor's libraries, before loading the model."""
    loaded_bytes: int
    """After loading the model and predicting its golden rows."""

    @property
    def model_bytes(self) -> int:
        """What the model itself adds."""
        return max(0, self.loaded_bytes - self.baseline_bytes)


@dataclass(frozen=True)
class Resources:
    """Kubernetes-style requests and limits (``"256Mi"``, ``"250m"``)."""

    memory_request: str
    memory_limit: str
    cpu_request: str
    cpu_limit: str


def resources_for(profile: MemoryProfile | None) -> Resources:
    """Request = loaded peak + server overhead + twice the model (batches, copies), rounded up
    to 64 MiB; limit = twice the request. Without a profile: 512Mi / 1Gi."""
    if profile is None:
        return Resources("512Mi", "1Gi", "250m", "1")
    need = profile.loaded_bytes + _SERVER_OVERHEAD + 2 * profile.model_bytes
    request = math.ceil(need / _STEP) * _STEP
    return Resources(_mi(request), _mi(2 * request), "250m", "1")


def _mi(n: int) -> str:
    return f"{n // MIB}Mi"


def _peak_rss() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def measure(package: Path) -> MemoryProfile:
    """Load ``package`` in this process and record peak RSS before and after (run it in a
    fresh process: peaks only grow)."""
    from modelport.package import load_model, open_package
    from modelport.runtimes import FLAVORS, require

    pkg = open_package(package)
    flavor = pkg.manifest.flavor
    if flavor in _LIBRARY:
        require(_LIBRARY[flavor], FLAVORS[flavor][1])
    import pandas  # noqa: F401  (the server imports it for tabular inputs)

    baseline = _peak_rss()
    loaded = load_model(package)
    golden = pkg.golden()
    records = golden["inputs"] if golden else [loaded.signature.example_record()]
    loaded.runtime.predict(loaded.signature.from_records(records))
    return MemoryProfile(baseline, _peak_rss())


def main(argv: list[str]) -> int:
    """``python -m modelport.deploy.sizing PACKAGE``: the profile as one JSON line."""
    profile = measure(Path(argv[0]))
    print(json.dumps({"baseline_bytes": profile.baseline_bytes,
                      "loaded_bytes": profile.loaded_bytes}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
