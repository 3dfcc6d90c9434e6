"""Training recipe of the reference ``cardiaco`` model: an LSTM over 20 x 9 standardised vitals.

Data: the synthetic generator (``generator.py``; **synthetic, not clinical**), three disjoint
seeded sets (train / validation / held-out test), each turned into model inputs by the
*serving* pre-processing (``processing.preprocess`` on the long-format rows), so training and
serving cannot drift apart. A one-layer PyTorch LSTM is trained with Adam; the epoch with the
best validation accuracy is kept, scored once on the test set and exported to ONNX (opset 17,
dynamic batch and patients axes), which is checked against PyTorch with onnxruntime::

    pip install -e '.[train-torch]'                   # torch==2.13.0 (CPU), training only
    python -m mlgate_services.cardiaco.recipe [--out DIR]

Writes ``model.onnx``, ``metrics.json`` and ``baseline.json``. Deterministic: fixed seeds,
``torch.use_deterministic_algorithms(True)``, one intra-op thread (so the float reductions do
not depend on the core count). Serving needs neither torch nor this module.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mlgate_services.cardiaco import generator
from mlgate_services.cardiaco.processing import MAX_PATIENTS, SIGNS, STATES, WINDOW, preprocess

__all__ = [
    "ARTIFACT_DIR",
    "HIDDEN",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "SEEDS",
    "SIZES",
    "build_model",
    "dataset",
    "evaluate",
    "export_onnx",
    "main",
    "train",
    "write_baseline",
]

ARTIFACT_DIR = Path(__file__).parent / "artifact"
INPUT_NAME = "vitals"
OUTPUT_NAME = "probabilities"
OPSET = 17
HIDDEN = 32
EPOCHS = 30
BATCH = 64
LEARNING_RATE = 3e-3
#: Patients per set (balanced over the four states) and the generator seed of each set.
SIZES = {"train": 4000, "validation": 800, "test": 2000}
SEEDS = {"train": 11, "validation": 22, "test": 33, "torch": 44}
#: Distinct id ranges per set, so a patient id never appears in two sets.
FIRST_IDS = {"train": 1_000_000, "validation": 2_000_000, "test": 3_000_000}
MAX_ARTIFACT_BYTES = 300_000
ONNX_TOLERANCE = 1e-4

Array = np.ndarray[Any, Any]


def dataset(n: int, *, seed: int, first_id: int = 1_000_000) -> tuple[Array, Array, list[Any]]:
    """``n`` synthetic patients as model inputs ``[n, 20, 9]``, labels ``[n]`` and the patients."""
    patients = generator.generate(n, seed=seed, first_id=first_id)
    state: dict[Any, str] = {p.id: p.state for p in patients}
    x_parts, y_parts = [], []
    for i in range(0, n, MAX_PATIENTS):  # requests of at most MAX_PATIENTS, like a client would send
        seqs = preprocess(generator.to_columns(patients[i : i + MAX_PATIENTS]))
        x_parts.append(seqs.x)
        y_parts.append(np.array([STATES.index(state[pid]) for pid in seqs.ids], dtype=np.int64))
    return np.concatenate(x_parts), np.concatenate(y_parts), patients


def build_model(hidden: int = HIDDEN) -> Any:
    """The network: ``[batch, patients, 20, 9]`` → LSTM → linear → softmax ``[batch, patients, 4]``.

    The patients axis lets one request carry several patients through the generic onnx runtime
    (one request = one item); ``logits`` takes plain ``[n, 20, 9]`` sequences for training.
    """
    import torch
    from torch import nn

    class CardiacLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(len(SIGNS), hidden, batch_first=True)
            self.head = nn.Linear(hidden, len(STATES))

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(x)
            out: torch.Tensor = self.head(h[-1])
            return out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, patients = x.shape[0], x.shape[1]
            flat = x.reshape(batch * patients, WINDOW, len(SIGNS))
            return torch.softmax(self.logits(flat), dim=-1).reshape(batch, patients, len(STATES))

    return CardiacLSTM()


def evaluate(probabilities: Array, labels: Array) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted)."""
    pred = probabilities.argmax(axis=1)
    k = len(STATES)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    per_class: dict[str, dict[str, float]] = {}
    for i, name in enumerate(STATES):
        tp = float(matrix[i, i])
        precision = tp / matrix[:, i].sum() if matrix[:, i].sum() else 0.0
        recall = tp / matrix[i].sum() if matrix[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": int(matrix[i].sum()),
        }
    return {
        "accuracy": round(float((pred == labels).mean()), 4),
        "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4),
        "per_class": per_class,
        "confusion_matrix": {
            "labels": list(STATES),
            "rows": "true",
            "columns": "predicted",
            "matrix": matrix.tolist(),
        },
    }


def export_onnx(model: Any) -> bytes:
    """ONNX bytes of ``model`` (opset 17; ``batch`` and ``patients`` axes dynamic)."""
    import torch

    example = torch.zeros(2, 3, WINDOW, len(SIGNS))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter (the dynamo exporter needs onnxscript, which the extra does not
        # pull in) is deprecated and deprecates its own helpers; it also warns about tracing
        # Python conditionals inside nn.LSTM and about LSTM batch sizes. Only during the export:
        # the result is checked against torch with onnxruntime instead.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        warnings.filterwarnings("ignore", message=".*LSTM.*", category=UserWarning)
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "patients"}, OUTPUT_NAME: {0: "batch", 1: "patients"}},
        )
        return path.read_bytes()


def _onnx_probabilities(blob: bytes, x: Array) -> Array:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])
    out: Array = session.run(None, {INPUT_NAME: x[None].astype(np.float32)})[0][0]
    return out


def _stats(values: Array) -> dict[str, Any]:
    values = values[~np.isnan(values)]
    return {
        "mean": round(float(values.mean()), 6),
        "std": round(float(values.std()), 6),
        "min": round(float(values.min()), 6),
        "max": round(float(values.max()), 6),
        # 11 edges at the 0, 10, …, 100 % quantiles: 10 equal-mass bins for PSI.
        "quantile_edges": [round(float(q), 6) for q in np.quantile(values, np.linspace(0, 1, 11))],
    }


#: How captured requests become feature rows: the long-format vitals pivoted to one row per
#: (patient, timestamp) with the nine signs' raw readings (mlgate.monitoring.features).
INPUT_SPEC: dict[str, Any] = {
    "type": "long",
    "id": "idAtencion",
    "time": "fecRegistro",
    "name": "nomSigno",
    "value": "valor",
}
OUTPUT_SPEC: dict[str, Any] = {"kind": "classifier", "label": "State", "scores": "inferences"}


def _baseline(
    patients: list[Any], labels: Array, probabilities: Array, test_probabilities: Array
) -> dict[str, Any]:
    """The drift baseline (``mlgate-baseline/1``) of the training patients: their raw readings per
    (patient, timestamp) as captured requests are read (the standardised model input is ~N(0, 1)
    by construction and would show no drift), and the model's answers on them (state mix, top
    probability, each state's probability)."""
    from mlgate.monitoring.baseline import build_baseline
    from mlgate.monitoring.features import input_rows, output_rows, rows_to_columns

    rows: list[dict[str, Any]] = []
    for i in range(0, len(patients), MAX_PATIENTS):
        rows.extend(input_rows(generator.to_columns(patients[i : i + MAX_PATIENTS]), INPUT_SPEC, SIGNS))
    columns, _, _ = rows_to_columns([{sign: row.get(sign) for sign in SIGNS} for row in rows])
    answers = [
        {
            "State": STATES[int(np.argmax(p))],
            "inferences": {s: round(float(v), 2) for s, v in zip(STATES, p, strict=True)},
        }
        for p in probabilities
    ]
    out_columns, _, outputs = rows_to_columns([r for a in answers for r in output_rows(a, OUTPUT_SPEC)])
    columns.update(out_columns)
    doc = build_baseline(
        columns,
        feature_names=list(SIGNS),
        output_names=outputs,
        input_spec=INPUT_SPEC,
        output_spec=OUTPUT_SPEC,
        meta={
            "source": "raw readings of the synthetic training patients and the model's answers (recipe.py)"
        },
    )
    return {
        **doc,
        "space": "raw vitals per (patient, timestamp) as captured requests arrive, before the window",
        "n_sequences": len(patients),
        "class_prior": {s: round(float((labels == i).mean()), 6) for i, s in enumerate(STATES)},
        "test_mean_probabilities": {
            s: round(float(test_probabilities[:, i].mean()), 6) for i, s in enumerate(STATES)
        },
    }


def write_baseline(out_dir: Path = ARTIFACT_DIR) -> dict[str, Any]:
    """Rebuild ``baseline.json`` from the committed ``model.onnx`` (no torch needed)."""
    x_train, y_train, train_patients = dataset(
        SIZES["train"], seed=SEEDS["train"], first_id=FIRST_IDS["train"]
    )
    x_test, _, _ = dataset(SIZES["test"], seed=SEEDS["test"], first_id=FIRST_IDS["test"])
    blob = (out_dir / "model.onnx").read_bytes()
    baseline = _baseline(
        train_patients, y_train, _onnx_probabilities(blob, x_train), _onnx_probabilities(blob, x_test)
    )
    (out_dir / "baseline.json").write_text(
        json.dumps(baseline, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    return baseline


def fit_best_epoch(
    model: Any, optimiser: Any, xt: Any, yt: Any, xv: Any, y_val: np.ndarray, *, epochs: int, shuffle: Any
) -> tuple[float, int, list[float]]:
    """Train ``epochs`` epochs (shuffled minibatches of ``BATCH``, clipped gradients) and keep the
    weights of the epoch with the best validation accuracy (loaded into ``model`` at the end);
    returns that accuracy, its epoch (from 0) and each epoch's. Shared with ``mlgate train cardiaco``."""
    import torch
    from torch.nn import functional

    best: tuple[float, int, dict[str, Any]] = (-1.0, -1, {})
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=shuffle)
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            loss = functional.cross_entropy(model.logits(xt[idx]), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
        model.eval()
        with torch.no_grad():
            val_acc = float((model.logits(xv).argmax(1).numpy() == y_val).mean())
        history.append(round(val_acc, 4))
        if val_acc > best[0]:
            best = (val_acc, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return best[0], best[1], history


def train(out_dir: Path) -> dict[str, Any]:
    """Train, evaluate, export and write ``model.onnx``, ``metrics.json`` and ``baseline.json``."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(SEEDS["torch"])
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x_train, y_train, train_patients = dataset(
            SIZES["train"], seed=SEEDS["train"], first_id=FIRST_IDS["train"]
        )
        x_val, y_val, _ = dataset(
            SIZES["validation"], seed=SEEDS["validation"], first_id=FIRST_IDS["validation"]
        )
        x_test, y_test, _ = dataset(SIZES["test"], seed=SEEDS["test"], first_id=FIRST_IDS["test"])

        model = build_model()
        optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
        xv = torch.from_numpy(x_val)
        shuffle = torch.Generator().manual_seed(SEEDS["torch"])
        best_acc, best_epoch, history = fit_best_epoch(
            model, optimiser, xt, yt, xv, y_val, epochs=EPOCHS, shuffle=shuffle
        )
        model.eval()
        with torch.no_grad():
            torch_test = model(torch.from_numpy(x_test)[None]).numpy()[0]

        blob = export_onnx(model)
        onnx_test = _onnx_probabilities(blob, x_test)
        max_diff = float(np.abs(onnx_test - torch_test).max())
        if max_diff > ONNX_TOLERANCE:
            raise RuntimeError(f"onnxruntime differs from torch by {max_diff:g} (> {ONNX_TOLERANCE:g})")
        if len(blob) > MAX_ARTIFACT_BYTES:
            raise RuntimeError(f"model.onnx is {len(blob)} bytes, limit {MAX_ARTIFACT_BYTES}")
    finally:
        torch.set_num_threads(threads)

    metrics: dict[str, Any] = {
        **evaluate(onnx_test, y_test),
        "n_train": len(y_train),
        "n_validation": len(y_val),
        "n_test": len(y_test),
        "validation_accuracy": round(best_acc, 4),
        "best_epoch": best_epoch + 1,
        "epochs": EPOCHS,
        "validation_accuracy_by_epoch": history,
        "seeds": SEEDS,
        "architecture": f"LSTM(9 -> {HIDDEN}, 1 layer) -> Linear({HIDDEN} -> 4) -> softmax",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "window": WINDOW,
        "signs": list(SIGNS),
        "states": list(STATES),
        "onnx_opset": OPSET,
        "onnx_max_abs_diff_vs_torch": float(f"{max_diff:.3g}"),
        "artifact_bytes": len(blob),
        "torch_version": torch.__version__,
        "data": "synthetic (mlgate_services.cardiaco.generator); not clinical data",
    }
    baseline = _baseline(train_patients, y_train, _onnx_probabilities(blob, x_train), onnx_test)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(blob)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out_dir / "baseline.json").write_text(
        json.dumps(baseline, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)  # printed, not written: varies
    return metrics


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m mlgate_services.cardiaco.recipe [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ARTIFACT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--baseline-only", action="store_true", help="only rebuild baseline.json from the folder's model.onnx"
    )
    args = parser.parse_args(argv)
    if args.baseline_only:
        doc = write_baseline(args.out)
        print(f"wrote baseline.json: {doc['n_rows']} rows, outputs {doc['output_names']}")
        return
    metrics = train(args.out)
    keys = ("accuracy", "macro_f1", "best_epoch", "artifact_bytes", "train_seconds")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    print(json.dumps(metrics["confusion_matrix"]["matrix"]))


if __name__ == "__main__":
    main()
