"""The ONNX flavor: signatures read from the graph, answers equal to the source model's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.errors import MissingExtra, ModelLoadError
from modelport.runtimes import load_runtime
from modelport.signature import Feature, Signature


def test_single_input_graph_is_an_array_signature(onnx_numeric: Any) -> None:
    sig = load_runtime(onnx_numeric.path, "onnx").signature
    assert (sig.input_kind, sig.array_dtype, sig.names) == ("array", "float32",
                                                            ("f0", "f1", "f2", "f3"))


def test_class_labels_are_read_from_the_graph(onnx_numeric: Any) -> None:
    sig = load_runtime(onnx_numeric.path, "onnx").signature
    assert (sig.task, sig.classes, sig.has_proba) == ("classification", ("no", "yes"), True)


def test_zipmap_classifier_matches_sklearn(onnx_numeric: Any) -> None:
    """skl2onnx's default ZipMap output still comes back as one probability matrix."""
    rt = load_runtime(onnx_numeric.path, "onnx")
    x = onnx_numeric.frame.to_numpy()
    out = rt.predict(rt.signature.from_matrix(x))
    np.testing.assert_allclose(out.probabilities, onnx_numeric.model.predict_proba(x), atol=1e-5)
    np.testing.assert_array_equal(out.predictions, onnx_numeric.model.predict(x))
    assert out.classes == ["no", "yes"]


def test_per_column_inputs_are_named_typed_features(onnx_columns: Any) -> None:
    sig = load_runtime(onnx_columns.path, "onnx").signature
    assert sig.input_kind == "dataframe"
    assert [(f.name, f.dtype) for f in sig.features] == [("a", "float"), ("color", "string"),
                                                         ("n", "int")]
    assert sig.classes == (0, 1)


def test_per_column_pipeline_matches_sklearn(onnx_columns: Any, records: Any) -> None:
    rt = load_runtime(onnx_columns.path, "onnx")
    out = rt.predict(rt.signature.from_records(records(onnx_columns.frame)))
    np.testing.assert_allclose(out.probabilities,
                               onnx_columns.model.predict_proba(onnx_columns.frame), atol=1e-5)
    np.testing.assert_array_equal(out.predictions, onnx_columns.model.predict(onnx_columns.frame))


def test_regressor_output_is_one_value_per_row(onnx_regressor: Any) -> None:
    rt = load_runtime(onnx_regressor.path, "onnx")
    x = onnx_regressor.frame.to_numpy()
    out = rt.predict(rt.signature.from_matrix(x))
    assert out.predictions.shape == (len(x),)
    np.testing.assert_allclose(out.predictions, onnx_regressor.model.predict(x), rtol=1e-4)
    assert rt.signature.task == "regression"


def test_given_signature_maps_named_features_onto_the_matrix_input(
        onnx_numeric: Any, records: Any) -> None:
    """A package's signature (named features) drives a single-input graph, columns in order."""
    named = Signature(tuple(Feature(n) for n in onnx_numeric.frame.columns), "dataframe",
                      "classification", ("no", "yes"), has_proba=True)
    rt = load_runtime(onnx_numeric.path, "onnx", signature=named)
    out = rt.predict(named.from_records(records(onnx_numeric.frame)))
    np.testing.assert_allclose(out.probabilities,
                               onnx_numeric.model.predict_proba(onnx_numeric.frame.to_numpy()),
                               atol=1e-5)


def test_given_signature_with_wrong_width_is_refused(onnx_numeric: Any) -> None:
    three = Signature((Feature("a"), Feature("b"), Feature("c")))
    with pytest.raises(ModelLoadError, match="takes 4 columns but the signature has 3"):
        load_runtime(onnx_numeric.path, "onnx", signature=three)


def test_given_signature_lacking_a_graph_input_is_refused(onnx_columns: Any) -> None:
    other = Signature((Feature("a"), Feature("colour"), Feature("n", "int")), "dataframe")
    with pytest.raises(ModelLoadError, match="input 'color' that is not a feature"):
        load_runtime(onnx_columns.path, "onnx", signature=other)


def test_not_an_onnx_file_is_a_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00not onnx at all")
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        load_runtime(bad, "onnx")


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_missing_onnx_libraries_name_the_pip_line(module: str, onnx_numeric: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra, match=r"pip install 'modelport\[onnx\]'"):
        load_runtime(onnx_numeric.path, "onnx")


def _softmax_net(path: Path) -> Path:
    """A one-layer network whose only output is a softmax over two classes."""
    from onnx import TensorProto, helper, save

    weights = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, -1.0, -1.0, 1.0])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["proba"], axis=1)],
        "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("proba", TensorProto.FLOAT, [None, 2])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(model, str(path))
    return path


def test_network_without_signature_returns_its_output_as_is(tmp_path: Path) -> None:
    rt = load_runtime(_softmax_net(tmp_path / "net.onnx"), "onnx")
    out = rt.predict(rt.signature.from_rows([[2.0, 0.0]]))
    assert rt.signature.task == "regression" and out.predictions.shape == (1, 2)


def test_network_softmax_output_becomes_probabilities_with_given_classes(tmp_path: Path) -> None:
    sig = Signature((Feature("a"), Feature("b")), "dataframe", "classification", ("cat", "dog"),
                    has_proba=True)
    rt = load_runtime(_softmax_net(tmp_path / "net.onnx"), "onnx", signature=sig)
    out = rt.predict(sig.from_rows([[2.0, 0.0], [0.0, 3.0]]))
    assert list(out.predictions) == ["cat", "dog"]
    np.testing.assert_allclose(out.probabilities[0], [0.98201376, 0.01798621], rtol=1e-5)  # type: ignore[index]
