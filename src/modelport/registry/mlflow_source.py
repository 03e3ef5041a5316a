"""``models:/`` URIs: models registered in an MLflow tracking server.

``models:/heart/3`` is version 3 of the registered model ``heart``; ``models:/heart@champion``
is the version its alias ``champion`` points to. :class:`MlflowRegistry` resolves them with
the MLflow client against ``--mlflow-tracking-uri`` (``MLFLOW_TRACKING_URI``), downloads the
version's model directory once into a local cache, and loads it as any MLflow model directory
(:func:`~modelport.package.load_mlflow`: natively for the sklearn, xgboost, lightgbm and onnx
flavors). The model is served under its registered name with the MLflow version number as its
version.

A server serving ``models:/heart@champion`` follows the alias as it follows its own registry's
(:class:`~modelport.server.rollout.AliasFollower`): :meth:`MlflowRegistry.alias_target` is
polled, and a new target is downloaded, loaded beside the old one, checked on its golden rows
(its input example) and the serving version's, and only then switched to. The MLflow client
(``pip install 'modelport[mlflow]'``) is needed here only; serving a model directory is not.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.errors import ConfigError, MissingExtra, ModelLoadError, ModelNotFound
from modelport.package import LoadedModel, load_mlflow
from modelport.runtimes.devices import Placement

__all__ = ["SCHEME", "MlflowRef", "MlflowRegistry", "is_mlflow_uri", "parse_mlflow_uri",
           "served_name"]

SCHEME = "models:/"
_log = logging.getLogger("modelport")


@dataclass(frozen=True)
class MlflowRef:
    """A parsed ``models:/`` URI: the registered name and a version or an alias."""

    name: str
    version: str | None = None
    alias: str | None = None


def is_mlflow_uri(target: str) -> bool:
    """Whether ``target`` is a ``models:/`` URI."""
    return target.startswith(SCHEME)


def parse_mlflow_uri(uri: str) -> MlflowRef:
    """``models:/name/version`` or ``models:/name@alias``; anything else is a ConfigError."""
    rest = uri[len(SCHEME):] if is_mlflow_uri(uri) else ""
    if "@" in rest and "/" not in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return MlflowRef(name, alias=alias)
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return MlflowRef(name, version=version)
    raise ConfigError(f"'{uri}' is not a models:/ URI modelport resolves: give "
                      "models:/NAME/VERSION (a version number) or models:/NAME@ALIAS")


class MlflowRegistry:
    """Registered models of one MLflow tracking server (see the module doc); the source an
    alias follower polls (``alias_target``) and fetches from (``fetch``)."""

    def __init__(self, tracking_uri: str | None, *, cache: Path | None = None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise MissingExtra("mlflow", "mlflow") from exc
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._cache = cache or Path(tempfile.mkdtemp(prefix="modelport-mlflow-"))
        self._owns_cache = cache is None
        self._registered: dict[str, str] = {}
        """Served name -> registered name."""

    def close(self) -> None:
        """Remove the download cache (when this object made it)."""
        if self._owns_cache:
            shutil.rmtree(self._cache, ignore_errors=True)

    def version_of(self, ref: MlflowRef) -> str:
        """The version number ``ref`` names now."""
        if ref.version is not None:
            return ref.version
        assert ref.alias is not None
        target = self._alias(ref.name, ref.alias)
        if target is None:
            raise ModelNotFound(f"the MLflow model '{ref.name}' has no alias '{ref.alias}' "
                                f"(tracking server {self._where()})")
        return target

    def load(self, uri: str, *, placement: Placement | None = None,
             trusted: Sequence[str] = ()) -> tuple[LoadedModel, str | None]:
        """Download and load what ``uri`` names now; with the alias to follow, if any."""
        ref = parse_mlflow_uri(uri)
        served = served_name(ref.name)
        self._registered[served] = ref.name
        version = self.version_of(ref)
        model = self.loader(served, placement=placement, trusted=trusted)(
            self.fetch(f"{served}:{version}"))
        _log.info("%s is version %s of the MLflow model %s", uri, version, ref.name)
        return model, ref.alias

    def loader(self, served: str, *, placement: Placement | None = None,
               trusted: Sequence[str] = ()) -> Callable[[Path], LoadedModel]:
        """Load a directory :meth:`fetch` made, as ``served`` at the version it holds."""
        def load(path: Path) -> LoadedModel:
            return load_mlflow(path, name=served, version=path.name, placement=placement,
                               trusted=trusted)
        return load

    def serves(self, served: str) -> bool:
        """Whether ``served`` is a model this object loaded."""
        return served in self._registered

    def alias_target(self, name: str, alias: str) -> str | None:
        """The version ``alias`` of the served model ``name`` points to (None: unset)."""
        return self._alias(self._registered.get(name, name), alias)

    def fetch(self, ref: str) -> Path:
        """The model directory of ``served:version``, downloaded once (versions of a
        registered model do not change); the directory is named after the version."""
        served, _, version = ref.rpartition(":")
        registered = self._registered.get(served, served)
        folder = self._cache / served / version
        if (folder / "MLmodel").is_file():
            return folder
        import mlflow.artifacts

        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=folder.parent))
        try:
            uri = self._client.get_model_version_download_uri(registered, version)
            got = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(staging), tracking_uri=self.tracking_uri))
            if not (got / "MLmodel").is_file():
                raise ModelLoadError(f"version {version} of the MLflow model '{registered}' "
                                     f"has no MLmodel file at {uri}")
            got.rename(folder)
        except Exception as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"cannot download version {version} of the MLflow model "
                                 f"'{registered}' from {self._where()}: {_said(exc)}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _alias(self, registered: str, alias: str) -> str | None:
        try:
            found: Any = self._client.get_model_version_by_alias(registered, alias)
        except Exception as exc:
            if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND",
                                                  "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return str(found.version)

    def _where(self) -> str:
        return self.tracking_uri or "the default tracking URI"


def served_name(registered: str) -> str:
    """The name a registered model is served under (route-safe characters only)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", registered).strip("-.")
    return cleaned or "model"


def _said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
