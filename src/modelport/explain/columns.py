"""Which original feature each column a scikit-learn preprocessor writes comes from.

A tree model inside a Pipeline sees the preprocessor's output: one-hot columns, scaled columns,
passed-through columns. SHAP explains those columns; a client asked about ``thal``, not about
``cat__thal_fixed``. :func:`source_groups` maps every output column of the steps before the
final estimator to the original feature it was made from, so that contributions can be summed
back (sums keep additivity: the total is unchanged).

How a step is read, in order:

- a ``ColumnTransformer``: each fitted transformer's input columns (``_transformer_to_input_
  indices``, else the names it was given), and its output width from ``get_feature_names_out``
  (``passthrough``: its inputs; ``drop``: none);
- inside one transformer: as many outputs as inputs map one to one; a single input takes every
  output; otherwise each output name is matched to the input name it starts with (the longest:
  ``OneHotEncoder`` writes ``thal_fixed``);
- any other step that keeps the width maps one to one; one that changes it without names to go
  by makes a group of all its inputs (reported under ``"a+b+…"``), which keeps the sum right.

Nothing here imports scikit-learn: the fitted objects are read through their attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Groups", "group_names", "source_groups"]

Groups = list[frozenset[int]]
"""For each output column: the indices of the original features it comes from."""


def source_groups(steps: Sequence[Any], names: Sequence[str], width: int) -> Groups:
    """For each of the ``width`` columns the ``steps`` (applied in order to features ``names``)
    write: the original features it comes from."""
    groups: Groups = [frozenset({i}) for i in range(len(names))]
    current = list(names)
    for step in steps:
        if step is None or step == "passthrough":
            continue
        mapping, current = _step_sources(step, current)
        groups = [frozenset().union(*(groups[i] for i in srcs)) for srcs in mapping]
    if len(groups) != width:  # a step we could not read: one group of everything
        return [frozenset(range(len(names)))] * width
    return groups


def group_names(groups: Groups, names: Sequence[str]) -> tuple[list[str], list[int]]:
    """The distinct groups' names (a feature's own name, or ``a+b`` for a joint group), in
    feature order, and for each column the index of its group."""
    distinct = sorted(set(groups), key=lambda g: (min(g) if g else len(names), len(g)))
    labels = ["+".join(names[i] for i in sorted(g)) or "(constant)" for g in distinct]
    index = {g: i for i, g in enumerate(distinct)}
    return labels, [index[g] for g in groups]


def _step_sources(step: Any, inputs: list[str]) -> tuple[list[frozenset[int]], list[str]]:
    """(for each output: the input positions it comes from, the output names)."""
    if hasattr(step, "transformers_"):
        return _column_transformer(step, inputs)
    out = _names_out(step, inputs)
    if out is None:
        return [frozenset(range(len(inputs)))], ["?"]
    return _within(list(range(len(inputs))), inputs, out), out


def _column_transformer(ct: Any, inputs: list[str]) -> tuple[list[frozenset[int]], list[str]]:
    by_name: dict[str, list[int]] = getattr(ct, "_transformer_to_input_indices", {}) or {}
    mapping: list[frozenset[int]] = []
    names: list[str] = []
    for name, trans, cols in ct.transformers_:
        idx = by_name.get(name)
        if idx is None:
            idx = _indices(cols, inputs)
        idx = [int(i) for i in idx]
        if trans == "drop" or not idx:
            continue
        cols_in = [inputs[i] for i in idx]
        out = cols_in if trans == "passthrough" else _names_out(trans, cols_in)
        if out is None:
            out = [f"{name}?"]
        mapping += _within(idx, cols_in, out)
        names += [f"{name}__{o}" for o in out]
    return mapping, names


def _within(idx: list[int], cols_in: list[str], out: list[str]) -> list[frozenset[int]]:
    """The inputs (positions ``idx``, named ``cols_in``) behind each of one transformer's
    outputs ``out``."""
    if len(out) == len(idx):
        return [frozenset({i}) for i in idx]
    if len(idx) == 1:
        return [frozenset(idx)] * len(out)
    everything = frozenset(idx)
    found: list[frozenset[int]] = []
    for name in out:
        best = max((c for c in range(len(cols_in)) if name == cols_in[c]
                    or name.startswith(cols_in[c] + "_")), key=lambda c: len(cols_in[c]),
                   default=None)
        found.append(everything if best is None else frozenset({idx[best]}))
    return found


def _names_out(trans: Any, inputs: list[str]) -> list[str] | None:
    try:
        return [str(n) for n in trans.get_feature_names_out(inputs)]
    except Exception:  # a step without names (or that refuses these): unknown width
        return None


def _indices(cols: Any, inputs: list[str]) -> list[int]:
    """A ColumnTransformer's column selection as positions (names, positions or a mask)."""
    if isinstance(cols, slice):
        return list(range(len(inputs)))[cols]
    if isinstance(cols, (str, int)):
        cols = [cols]
    picked = list(cols)
    if picked and np.asarray(picked).dtype.kind == "b":
        return [i for i, keep in enumerate(picked) if keep]
    return [inputs.index(c) if isinstance(c, str) else int(c) for c in picked]
