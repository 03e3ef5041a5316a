"""Explanations: how much each original feature moved one prediction, with SHAP.

Two explainers, chosen per model by :func:`build_explainer`:

- **tree** (SHAP's ``TreeExplainer``, exact and fast): scikit-learn gradient boosting, random
  forests, extra trees and decision trees (alone or last in a Pipeline), XGBoost and LightGBM
  boosters, and XGBClassifier/LGBMClassifier in a Pipeline. It explains the model's raw output:
  the *margin* (log-odds) of boosting classifiers, the *probability* of forest and tree
  classifiers, the *value* of regressors. The columns a Pipeline's preprocessor writes are
  summed back to the original feature they came from (:mod:`modelport.explain.columns`: a
  one-hot encoded ``thal`` is one contribution).
- **kernel** (SHAP's ``KernelExplainer``, model-agnostic) for everything else (linear models,
  MLPs, ONNX, torch, trees SHAP cannot read, categorical XGBoost/LightGBM): the model is called
  on coalitions of the row's values and a *background* sample, within a budget of
  ``samples`` coalitions per row. It explains the probabilities of a classifier, the value of
  a regressor, over the original features directly. The background comes from the package's
  reference profile (:func:`background_from_profile`: rows drawn from each feature's reference
  bins, weighted by their counts), else from the golden rows recorded at pack time.

Either way the answer is additive: ``base_values[k] + sum(contributions[row, k, :])`` equals
the explained output ``k`` for the row (:attr:`Explanation.values`).

``shap`` is an optional extra (``pip install 'modelport[explain]'``), imported only when an
explainer is built; :func:`shap_available` says whether it can be.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ModelportError
from modelport.explain.columns import group_names, source_groups
from modelport.monitoring.profile import CategoricalProfile, ReferenceProfile
from modelport.runtimes import Runtime
from modelport.signature import Signature
from modelport.types import Columns

__all__ = ["Explainer", "Explanation", "ExplainUnavailable", "background_from_profile",
           "build_explainer", "shap_available"]

FloatArray = npt.NDArray[np.float64]
Output = Literal["margin", "probability", "value"]

_PROBA_TREES = frozenset({"RandomForestClassifier", "ExtraTreesClassifier",
                          "DecisionTreeClassifier", "ExtraTreeClassifier"})
"""Tree classifiers whose raw output SHAP explains is the probability of each class."""
_TREES = _PROBA_TREES | {
    "RandomForestRegressor", "ExtraTreesRegressor", "DecisionTreeRegressor",
    "ExtraTreeRegressor", "GradientBoostingClassifier", "GradientBoostingRegressor",
    "XGBClassifier", "XGBRegressor", "LGBMClassifier", "LGBMRegressor"}
"""Final estimators ``TreeExplainer`` reads (one SHAP cannot, such as a multi-class
GradientBoostingClassifier, falls back to the kernel explainer)."""


class ExplainUnavailable(ModelportError):
    """Explanations need a package that is not installed (``shap``): 501."""

    status = 501

    def __init__(self) -> None:
        super().__init__("explanations need the 'shap' package, which is not installed; "
                         "install it with: pip install 'modelport[explain]'")


def shap_available() -> bool:
    """Whether ``shap`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("shap") is not None
    except (ImportError, ValueError):  # a broken entry in sys.modules
        return False


def _shap() -> Any:
    try:
        import shap
    except ImportError as exc:
        raise ExplainUnavailable() from exc
    return shap


@dataclass(frozen=True)
class Explanation:
    """Contributions of each feature to each explained output, for a batch of rows."""

    method: str
    """``tree`` or ``kernel``."""
    output: Output
    """What is explained: the ``margin`` (log-odds), the ``probability`` or the ``value``."""
    outputs: tuple[str, ...]
    """What each explained output is: a class label, or ``prediction`` (a regressor)."""
    features: tuple[str, ...]
    """Original features (``a+b`` where a preprocessor mixed them into one column)."""
    base_values: FloatArray
    """``(n_outputs,)``: the expected output over the background (kernel) or the training
    data (tree)."""
    contributions: FloatArray
    """``(rows, n_outputs, n_features)``."""

    @property
    def values(self) -> FloatArray:
        """``(rows, n_outputs)``: the explained outputs, base value plus contributions."""
        values: FloatArray = self.base_values[None, :] + self.contributions.sum(axis=2)
        return values

    def take(self, start: int, stop: int) -> Explanation:
        """The rows ``start:stop``."""
        return Explanation(self.method, self.output, self.outputs, self.features,
                           self.base_values, self.contributions[start:stop])


class Explainer:
    """One model's explainer: ``explain(batch)`` (thread-safe: calls are serialised)."""

    def __init__(self, method: str, output: Output, outputs: Sequence[str],
                 features: Sequence[str], run: Callable[[Columns], tuple[FloatArray,
                                                                         FloatArray]]) -> None:
        self.method, self.output = method, output
        self.outputs, self.features = tuple(outputs), tuple(features)
        self._run = run
        self._lock = threading.Lock()

    def explain(self, batch: Columns) -> Explanation:
        """Contributions for every row of ``batch`` (validated against the model's
        signature)."""
        with self._lock:
            base, contributions = self._run(batch)
        return Explanation(self.method, self.output, self.outputs, self.features,
                           np.ascontiguousarray(base), np.ascontiguousarray(contributions))


def build_explainer(runtime: Runtime, *, background: Columns | None = None,
                    samples: int = 512) -> Explainer:
    """The explainer for ``runtime`` (see the module doc): a tree explainer when SHAP reads the
    model, else a kernel explainer over ``background`` (default: the signature's example
    row) with ``samples`` coalitions per row. Raises :class:`ExplainUnavailable` without
    shap."""
    shap = _shap()
    inner = getattr(runtime, "runtime", runtime)  # a CheckedRuntime's model
    tree = _tree_explainer(shap, inner, runtime.signature)
    if tree is not None:
        return tree
    sig = runtime.signature
    if background is None or background.n_rows == 0:
        background = sig.from_records([sig.example_record()], unseen="pass")
    return _kernel_explainer(shap, runtime, background, samples)


# -- tree ------------------------------------------------------------------------------------

def _tree_explainer(shap: Any, runtime: Any, sig: Signature) -> Explainer | None:
    flavor = getattr(runtime, "flavor", "")
    if flavor == "sklearn":
        return _sklearn_tree(shap, runtime, sig)
    if flavor == "xgboost" and not runtime.categorical:
        kind = runtime.kind
        output: Output = "value" if kind == "regression" else "margin"
        return _tree(shap, runtime.booster, sig, output=output, pre=[], width=len(sig.names),
                     prepare=lambda b: b.stacked(sig.names).astype(np.float32, copy=False))
    if flavor == "lightgbm" and not runtime.codes:
        output = "value" if runtime.kind == "regression" else "margin"
        return _tree(shap, runtime.booster, sig, output=output, pre=[], width=len(sig.names),
                     prepare=lambda b: b.stacked(sig.names).astype(np.float64, copy=False))
    return None


def _sklearn_tree(shap: Any, runtime: Any, sig: Signature) -> Explainer | None:
    from modelport.runtimes.sklearn import to_model_input

    model = runtime.model
    steps = [s for _, s in getattr(model, "steps", [])]
    final = steps[-1] if steps else model
    name = type(final).__name__
    if name not in _TREES:
        return None
    pre = steps[:-1]

    def prepare(batch: Columns) -> Any:
        x = to_model_input(sig, batch, as_array=runtime.takes_array)
        for step in pre:
            if step is not None and step != "passthrough":
                x = step.transform(x)
        dense = x.toarray() if hasattr(x, "toarray") else x
        return np.asarray(dense, dtype=np.float64)

    classifier = hasattr(final, "classes_")
    output: Output = ("probability" if name in _PROBA_TREES else
                      "margin" if classifier else "value")
    width = prepare(sig.from_records([sig.example_record()], unseen="pass")).shape[1]
    return _tree(shap, final, sig, output=output, pre=pre, width=width, prepare=prepare)


def _tree(shap: Any, model: Any, sig: Signature, *, output: Output, pre: list[Any],
          width: int, prepare: Callable[[Columns], Any]) -> Explainer | None:
    try:
        explainer = shap.TreeExplainer(model)
    except Exception:  # a model SHAP's tree reader does not take: the kernel explainer will
        return None
    groups = source_groups(pre, sig.names, width)
    labels, column_group = group_names(groups, sig.names)
    merge = np.zeros((width, len(labels)))
    merge[np.arange(width), column_group] = 1.0

    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))

    def run(batch: Columns) -> tuple[FloatArray, FloatArray]:
        found = explainer(prepare(batch))  # the call API: one shape for every flavor
        raw = np.asarray(found.values, dtype=np.float64)
        per_column = raw[:, None, :] if raw.ndim == 2 else raw.transpose(0, 2, 1)
        bases = np.asarray(found.base_values, dtype=np.float64)
        base = np.atleast_1d(bases[0]) if len(bases) else expected
        return base, per_column @ merge

    return Explainer("tree", output, _output_names(sig, output, len(expected)), labels, run)


def _output_names(sig: Signature, output: Output, n_out: int) -> list[str]:
    classes = [str(c) for c in sig.classes or ()]
    if output == "value" or not classes:
        return ["prediction"] if n_out == 1 else [str(i) for i in range(n_out)]
    if n_out == 1 and len(classes) == 2:  # a binary margin: the positive class's log-odds
        return [classes[1]]
    return classes[:n_out] if len(classes) >= n_out else [str(i) for i in range(n_out)]


# -- kernel ----------------------------------------------------------------------------------

class _Codec:
    """Rows of any feature types as a float matrix (what KernelExplainer mixes) and back:
    numbers as themselves, strings and categories as indices into a vocabulary."""

    def __init__(self, sig: Signature, background: Columns) -> None:
        self.sig = sig
        self.kinds = {f.name: background.data[f.name].dtype for f in sig.features}
        self.vocab: dict[str, list[Any]] = {n: [] for n, k in self.kinds.items() if k.kind == "O"}

    def encode(self, batch: Columns) -> FloatArray:
        cols = []
        for name in self.sig.names:
            values = batch.data[name]
            vocab = self.vocab.get(name)
            if vocab is None:
                cols.append(np.asarray(values, dtype=np.float64))
                continue
            codes = []
            for v in values.tolist():
                if v not in vocab:
                    vocab.append(v)
                codes.append(vocab.index(v))
            cols.append(np.asarray(codes, dtype=np.float64))
        return np.column_stack(cols) if cols else np.empty((batch.n_rows, 0))

    def decode(self, matrix: FloatArray) -> Columns:
        data: dict[str, npt.NDArray[Any]] = {}
        for j, name in enumerate(self.sig.names):
            vocab = self.vocab.get(name)
            col = matrix[:, j]
            if vocab is not None:
                data[name] = np.asarray([vocab[int(c)] for c in col], dtype=object)
            else:
                data[name] = col.astype(self.kinds[name])
        return Columns(data, matrix.shape[0])


def _kernel_explainer(shap: Any, runtime: Runtime, background: Columns,
                      samples: int) -> Explainer:
    sig = runtime.signature
    codec = _Codec(sig, background)
    proba = sig.has_proba

    def model(matrix: FloatArray) -> FloatArray:
        outputs = runtime.predict(codec.decode(matrix))
        if proba and outputs.probabilities is not None:
            return np.asarray(outputs.probabilities, dtype=np.float64)
        return np.asarray(outputs.predictions, dtype=np.float64)

    explainer = shap.KernelExplainer(model, codec.encode(background), silent=True)
    output: Output = "probability" if proba else "value"
    n_out = len(np.atleast_1d(explainer.expected_value))

    def run(batch: Columns) -> tuple[FloatArray, FloatArray]:
        raw = np.asarray(explainer.shap_values(codec.encode(batch), nsamples=samples,
                                               l1_reg=False, silent=True), dtype=np.float64)
        per_feature = raw[:, None, :] if raw.ndim == 2 else raw.transpose(0, 2, 1)
        base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
        return base, per_feature

    return Explainer("kernel", output, _output_names(sig, output, n_out), sig.names, run)


# -- background ------------------------------------------------------------------------------

def background_from_profile(profile: ReferenceProfile, sig: Signature, *, rows: int = 50,
                            seed: int = 0) -> Columns | None:
    """``rows`` rows drawn from the reference profile: each feature's value from its reference
    bins (a numeric bin's mean, a category), weighted by the bins' counts, features drawn
    independently (as the kernel explainer treats them anyway). None when the profile does not
    describe every feature of ``sig``."""
    by_name = {p.name: p for p in profile.features}
    if not all(n in by_name for n in sig.names) or rows < 1:
        return None
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for feat in sig.features:
        prof = by_name[feat.name]
        if isinstance(prof, CategoricalProfile):
            values: list[Any] = list(prof.vocabulary)
            counts = np.asarray(prof.counts[:len(values)], dtype=np.float64)
        else:
            values = list(prof.centers)  # under/overflow, the bins (missing is left out)
            counts = np.asarray(prof.counts[:len(values)], dtype=np.float64)
            if feat.dtype == "int":
                values = [round(v) for v in values]
        if not values or counts.sum() <= 0:
            columns[feat.name] = [feat.example_value()] * rows
            continue
        picked = rng.choice(len(values), size=rows, p=counts / counts.sum())
        columns[feat.name] = [values[i] for i in picked]
    try:
        return sig.from_columns(columns, unseen="pass")
    except ModelportError:  # a profile that does not fit the signature's types
        return None
