"""A small MLP and an LSTM, trained on synthetic data once per session and saved the ways
users save torch models: TorchScript (``.pt``), ``torch.export`` (``.pt2``) and the whole
module (``torch.save``, ``.pth``: its class is this module's, importable as
``tests.runtimes.torch_nets``).

A test module makes its fixture from :func:`trained`; training runs once per session
whichever modules ask for it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

MLP_FEATURES = [f"s{i}" for i in range(8)]
STEPS, CHANNELS = 10, 3


class MLP(torch.nn.Module):  # type: ignore[misc]
    """8 numbers -> 3 class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(),
                                       torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                       torch.nn.Linear(64, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMNet(torch.nn.Module):  # type: ignore[misc]
    """A sequence of 10 steps x 3 channels -> 2 class logits (from the last step)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(CHANNELS, 24, batch_first=True)
        self.head = torch.nn.Linear(24, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


@dataclass(frozen=True)
class TorchModels:
    """Everything saved under ``root``: models, example inputs and labelled data."""

    root: Path
    mlp: MLP
    lstm: LSTMNet
    mlp_x: np.ndarray
    lstm_x: np.ndarray

    def path(self, name: str) -> Path:
        """A file under ``root`` (``mlp.pt``, ``lstm.pth``, ``mlp_data.csv``, ...)."""
        return self.root / name


def lstm_names() -> list[str]:
    """The LSTM's features, as the sidecar names them (input ``x``, C order)."""
    return [f"x_{t}_{c}" for t in range(STEPS) for c in range(CHANNELS)]


def _mlp_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(900, 8)).astype(np.float32)
    w = rng.normal(size=(8, 3))
    y = (np.tanh(x @ w) + 0.1 * rng.normal(size=(900, 3))).argmax(axis=1)
    return x, y


def _lstm_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Label 1 when channel 0 rises over the sequence (its second half above its first)."""
    x = rng.normal(size=(700, STEPS, CHANNELS)).astype(np.float32)
    drift = rng.normal(size=(700, 1)).astype(np.float32)
    x[:, :, 0] += drift * np.linspace(-1, 1, STEPS, dtype=np.float32)
    y = (x[:, STEPS // 2:, 0].mean(axis=1) > x[:, :STEPS // 2, 0].mean(axis=1)).astype(int)
    return x, y


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int,
           lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    model.eval()


def _save(model: torch.nn.Module, root: Path, stem: str, example: np.ndarray) -> None:
    with warnings.catch_warnings():  # TorchScript and torch.export warn of their own futures
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(root / f"{stem}.pt"))
        program = torch.export.export(model, (torch.from_numpy(example),), dynamic_shapes={
            "x": {0: torch.export.Dim("batch", min=1)}})
        torch.export.save(program, str(root / f"{stem}.pt2"))
    torch.save(model, root / f"{stem}.pth")


@functools.cache
def _trained(root: Path) -> TorchModels:
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    torch.set_num_threads(1)  # what the runtime sets: the same sums in every session
    root.mkdir(parents=True, exist_ok=True)
    mlp_x, mlp_y = _mlp_data(rng)
    lstm_x, lstm_y = _lstm_data(rng)
    mlp, lstm = MLP(), LSTMNet()
    _train(mlp, mlp_x[:600], mlp_y[:600], 80, 0.01)
    _train(lstm, lstm_x[:400], lstm_y[:400], 40, 0.03)
    _save(mlp, root, "mlp", mlp_x[:4])
    _save(lstm, root, "lstm", lstm_x[:4])
    pd.DataFrame(mlp_x[:16], columns=MLP_FEATURES).to_csv(root / "mlp_example.csv", index=False)
    np.save(root / "lstm_example.npy", lstm_x[:16])
    pd.DataFrame(mlp_x[600:], columns=MLP_FEATURES).assign(label=mlp_y[600:]).to_csv(
        root / "mlp_data.csv", index=False)
    pd.DataFrame(lstm_x[500:].reshape(-1, STEPS * CHANNELS), columns=lstm_names()).assign(
        label=lstm_y[500:]).to_csv(root / "lstm_data.csv", index=False)
    return TorchModels(root, mlp, lstm, mlp_x, lstm_x)


def trained(factory: pytest.TempPathFactory) -> TorchModels:
    """The trained MLP and LSTM, their files, examples and held-out labelled data (trained
    once per session, whichever test module asks first)."""
    return _trained(factory.getbasetemp() / "torch_models")


def reference(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities (float64) of the in-process module's logits."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(x))).numpy().astype(np.float64)
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    return proba.argmax(axis=1), proba
