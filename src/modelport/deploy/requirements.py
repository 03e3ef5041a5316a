"""Pinned ``requirements.txt`` for the image: the model's libraries at the versions it was saved
with (scikit-learn version skew breaks unpickling), then the serving stack at the versions of the
machine that ran ``modelport build``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, requires, version

__all__ = ["requirements_txt", "serving_pins"]

_GPU = {"onnxruntime": "onnxruntime-gpu"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")


def _key(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def serving_pins(distribution: str = "modelport", *,
                 extras: tuple[str, ...] = ()) -> dict[str, str]:
    """``{requirement name with extras: installed version}`` for the runtime dependencies of
    ``distribution``, plus those of the optional ``extras`` named (e.g. ``postgres``, ``redis``
    for replicas that share a database and a cache); extras not installed are left out."""
    pins: dict[str, str] = {}
    for req in requires(distribution) or []:
        marker = req.partition(";")[2].replace('"', "").replace("'", "")
        extra = re.search(r"extra\s*==\s*([A-Za-z0-9._-]+)", marker)
        if extra is not None and extra.group(1) not in extras:
            continue
        match = _NAME.match(req)
        if match is None:
            continue
        try:
            pins[match.group(1) + (match.group(2) or "")] = version(match.group(1))
        except PackageNotFoundError:
            continue
    return pins


def requirements_txt(
    model_libraries: Mapping[str, str],
    serving: Mapping[str, str],
    *,
    modelport_pin: str | None = None,
    gpu: bool = False,
) -> str:
    """The file's text. ``model_libraries`` win over ``serving`` for the same distribution;
    ``modelport_pin`` adds ``modelport==VERSION`` when no wheel ships in the bundle; ``gpu``
    takes onnxruntime's GPU build. A local version label (torch's ``2.13.0+cpu``) is left out:
    it names a build, not a release."""
    model_keys = {_key(d) for d in model_libraries}
    lines = ["# the model's libraries, at the versions it was saved with (modelport.yaml)"]
    lines += [f"{_GPU.get(dist, dist) if gpu else dist}=={ver.split('+')[0]}"
              for dist, ver in sorted(model_libraries.items())]
    lines.append("# the serving stack, at the versions that built this bundle")
    for req, ver in sorted(serving.items(), key=lambda kv: _key(kv[0])):
        match = _NAME.match(req)
        if match is not None and _key(match.group(1)) not in model_keys:
            lines.append(f"{req}=={ver}")
    if modelport_pin:
        lines.append(f"modelport=={modelport_pin}")
    return "\n".join(lines) + "\n"
