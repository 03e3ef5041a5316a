"""The check a version passes before it goes live: :func:`check_candidate`.

The candidate must answer its own golden rows as recorded, and the golden inputs of the live
version (when both take the same features) without raising or answering NaN/inf.
:func:`check_version` runs it on a registry version against the alias's current target, with
no server: ``modelport registry alias`` and ``rollback`` call it through
``Registry.set_alias`` / ``Registry.rollback`` with ``check=True``. A running server checks
against the version it serves instead (``modelport.server.gate``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from modelport import golden as rows
from modelport.errors import ModelportError
from modelport.package import LoadedModel, Package, load_model, open_package

if TYPE_CHECKING:
    from modelport.registry.core import Registry

__all__ = ["check_candidate", "check_version", "live_package"]

_log = logging.getLogger("modelport")


def check_candidate(candidate: LoadedModel, live: LoadedModel | Package | None = None) -> int:
    """Refuse a version about to go live (:class:`~modelport.errors.GoldenCheckFailed`, naming
    the row and the model's error) when it fails its own golden rows — raises, answers NaN/inf
    or answers differently from what was recorded — or, when ``live`` (the version serving
    now) takes the same features, raises or answers NaN/inf on the live version's golden
    inputs. Returns how many rows were answered."""
    what = f"{candidate.name}:{candidate.version}"
    pkg = candidate.package
    own = pkg.golden() if pkg else None
    if candidate.compressed and own and own.get("inputs"):
        # a compressed copy was accepted within a metric drop, not for equal answers
        checked = rows.check_inputs(candidate.runtime, own["inputs"], what=what,
                                    source="its own golden inputs")
    else:
        checked = rows.check_own(candidate.runtime, own, what=what, atol=_tolerance(candidate))
    if live is None:
        return checked
    live_pkg = live if isinstance(live, Package) else live.package
    live_what = (f"{live.manifest.name}:{live.manifest.version}" if isinstance(live, Package)
                 else f"{live.name}:{live.version}")
    if live_what == what or not rows.signatures_match(candidate.signature, live.signature):
        return checked
    golden = live_pkg.golden() if live_pkg is not None else None
    inputs = (golden or {}).get("inputs") or rows.boundary_records(live.signature)
    return checked + rows.check_inputs(candidate.runtime, inputs, what=what,
                                       source=f"the live version {live_what}")


def _tolerance(model: LoadedModel) -> float:
    """How far its answers may move from the recorded ones: those were the native model's, so
    a converted ONNX artifact in use may differ by the tolerance its parity passed with."""
    manifest = model.package.manifest if model.package is not None else None
    if manifest is None or manifest.onnx is None or manifest.flavor == "onnx" \
            or model.runtime.flavor != "onnx":
        return 1e-6
    return max(1e-6, float(manifest.onnx.get("parity", {}).get("tolerance", 0.0)))


def check_version(registry: Registry, name: str, version: str, *, live: str | None) -> int:
    """Load ``name:version`` from the store and refuse it
    (:class:`~modelport.errors.GoldenCheckFailed`) when it fails its golden rows or raises on
    ``live``'s (a version of the same model); returns how many rows were answered."""
    candidate = load_model(registry.fetch(f"{name}:{version}"), name=name)
    reference = None if live is None or live == candidate.version else \
        live_package(registry, f"{name}:{live}")
    return check_candidate(candidate, reference)


def live_package(registry: Registry, ref: str) -> Package | None:
    """The package ``ref`` names, verified, for its golden inputs; None when it cannot be
    read (logged: a damaged live version must not block moving away from it)."""
    try:
        return open_package(registry.fetch(ref))
    except ModelportError as exc:
        _log.warning("checking against %s: skipped, it cannot be read (%s)", ref, exc.message)
        return None
