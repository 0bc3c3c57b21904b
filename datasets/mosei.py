"""CMU-MOSEI from MultiBench's feature pickle: vision, audio and text features of a video segment, binary sentiment.

Expected layout under the data root (``--data-root`` or ``BENCH_DATA``), the file as MultiBench distributes it
(``pliang279/MultiBench`` README, Google Drive; it is the word-aligned file of MulT)::

    mosei/mosei_senti_data.pkl     {'train' | 'valid' | 'test': {'vision', 'audio', 'text', 'labels', 'id'}}

with per split ``vision`` (N, 50, 35) Facet, ``audio`` (N, 50, 74) COVAREP, ``text`` (N, 50, 300) GloVe word
vectors, ``labels`` (N, 1, 1) sentiment in [-3, 3]. ``pickle_file`` names another pickle of the same structure
under ``mosei/`` (e.g. the unaligned ``mosei_senti_data_noalign.pkl`` that BalanceBenchmark also reads); the
shapes are taken from the file and must agree across splits.

**Splits**: the file's train / valid / test (valid is the validation split).

**Labels**: the sentiment (the first label value of a sample) made binary. Default MultiBench's rule, positive
when the score is ``> 0`` (``datasets/affect/get_data.py``, ``Affectdataset._get_class``); ``zero_is_positive=True``
gives BalanceBenchmark's ``>= 0`` (``balancemm/datasets/Mosei_dataset.py``, ``acc2``). The two differ on samples
scored exactly 0 (neutral), which MultiBench counts as negative.

**Features**, as MultiBench's loader prepares them: ``-inf`` in audio set to 0 (``Affectdataset.__init__``),
and samples whose text features are all zero dropped (``drop_entry``, which tests ``sum == 0``; with
``drop_empty_text=False`` they are kept, as BalanceBenchmark does). Any other NaN or infinite value is set to 0
and counted in the cache manifest (``nonfinite_set_to_zero``). Each modality is kept as its (steps, features)
array and encoded by the MLP encoder (kind ``vector``: flattened, two Linear-BatchNorm-ReLU blocks).
MultiBench's collate instead cuts the leading steps before the first non-zero text step and pads at the end
for its GRU encoders; with a fixed-size MLP input the stored left padding is kept as it is.

**Pickle and trust**: unpickling can run arbitrary code, so the file is read only from the user's own data
root and, by default, with an unpickler that accepts nothing but numpy arrays, dtypes and scalars (what a
MultiBench pickle holds); a file that asks for anything else is refused with its name. A variant with
``trust_pickle=True`` uses plain ``pickle.load`` for a file you made or trust.

Preparation runs once into the cache (:mod:`bench.media.cache`): ``python -m bench data prepare mosei`` or the first
``load``. **Licence**: CMU-MOSEI's terms (CMU-MultimodalSDK): research use; MultiBench's processed pickle is
not redistributed with bench.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageError
from bench.media.cache import Progress
from bench.media.decode import reason
from bench.media.prepared import PreparedDataset, ScratchArrays
from bench.protocol import DatasetInfo

__all__ = ["INFO", "MOSEI", "MoseiDataset", "binary_labels", "read_feature_pickle"]

FOLDER = "mosei"
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # bench split -> pickle key
_REDOWNLOAD = "download it again (MultiBench README: Google Drive)"

#: What a pickle of numpy arrays refers to (numpy 1.x and 2.x module paths); nothing here runs user code.
_NUMPY_ONLY = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}

INFO = DatasetInfo(
    name="mosei",
    modalities=("vision", "audio", "text"),
    num_classes=2,
    version="1",
    license="CMU-MOSEI terms (CMU-MultimodalSDK): research use; the processed pickle is not redistributed by bench",
    citation="Zadeh, Liang, Poria, Cambria and Morency, Multimodal Language Analysis in the Wild: CMU-MOSEI Dataset "
    "and Interpretable Dynamic Fusion Graph, ACL 2018; features and splits as processed by Tsai et al., MulT, "
    "ACL 2019 and distributed by Liang et al., MultiBench, NeurIPS 2021",
    homepage="https://github.com/pliang279/MultiBench (README: the affect pickles on Google Drive); "
    "original data: https://github.com/A2Zadeh/CMU-MultimodalSDK",
    description="Facet (vision) + COVAREP (audio) + GloVe (text) features, 50 aligned steps, MLP encoders; "
    "binary sentiment (> 0 positive, MultiBench)",
    splits="the pickle's train / valid (the validation split) / test",
    layout="mosei/mosei_senti_data.pkl ({'train','valid','test'}: {'vision','audio','text','labels','id'})",
    # Budget choices, not measured on this dataset (no copy of it was at hand when the adapter was written).
    default_epochs=20,
    default_batch_size=64,
)


class _RefusedClass(Exception):
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_ONLY:
            raise _RefusedClass(f"{module}.{name}")
        return super().find_class(module, name)


def read_feature_pickle(path: Path, *, trust: bool = False) -> Any:
    """The unpickled file; without ``trust`` only numpy arrays, dtypes and scalars may be in it."""
    try:
        with open(path, "rb") as handle:
            if trust:
                return pickle.load(handle, encoding="latin1")  # Python 2 pickles of numpy arrays need latin1
            return _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise UsageError(f"{path} not found; {_REDOWNLOAD}") from None
    except _RefusedClass as exc:
        raise UsageError(
            f"{path} asks to load {exc}, which a pickle of numpy arrays does not need, so it was not "
            "unpickled (unpickling runs code); if you made or trust the file, register a variant of "
            "bench.datasets.mosei.MOSEI with trust_pickle=True"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        MemoryError,
    ) as exc:
        raise UsageError(
            f"cannot unpickle {path} ({reason(exc)}); the file is damaged or truncated: {_REDOWNLOAD}"
        ) from None


def binary_labels(scores: np.ndarray, *, zero_is_positive: bool) -> np.ndarray:
    """1 for positive sentiment: ``score > 0`` (MultiBench) or ``score >= 0`` (BalanceBenchmark)."""
    positive = scores >= 0 if zero_is_positive else scores > 0
    return positive.astype(np.int64)


@dataclass(frozen=True)
class MoseiDataset(PreparedDataset):
    """CMU-MOSEI features from MultiBench's pickle (see the module docstring). Options change the cache key but
    not ``info.version``: register a variant under its own name to use other values."""

    info: DatasetInfo = INFO
    pickle_file: str = "mosei_senti_data.pkl"
    zero_is_positive: bool = False
    drop_empty_text: bool = True
    trust_pickle: bool = False

    def _path(self, root: Path) -> Path:
        return root / FOLDER / self.pickle_file

    def _missing(self, root: Path) -> str | None:
        path = self._path(root)
        if not path.is_file():
            return f"{path} not found; expected {self.info.layout} (download: {self.info.homepage})"
        return None

    def _sources(self, root: Path) -> list[Path]:
        return [self._path(root)]

    def _options(self) -> dict[str, Any]:
        return {
            "pickle_file": self.pickle_file,
            "zero_is_positive": self.zero_is_positive,
            "drop_empty_text": self.drop_empty_text,
        }

    def _kinds(self) -> dict[str, str]:
        return {m: "vector" for m in self.info.modalities}

    # -- reading ----------------------------------------------------------------------------------
    def _split_arrays(self, data: Any, path: Path, key: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(features per modality as float32 (N, steps, dims), sentiment scores (N,)) of one split."""
        expected = "MultiBench's {'train','valid','test'} pickle"
        if not isinstance(data, dict) or key not in data:
            keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise UsageError(f"{path} has no {key!r} split (it has {keys}); expected {expected}")
        part = data[key]
        wanted = (*self.info.modalities, "labels")
        absent = [k for k in wanted if not isinstance(part, dict) or k not in part]
        if absent:
            raise UsageError(f"{path}: split {key!r} lacks {absent}; expected {expected} with {list(wanted)}")
        try:
            features = {m: np.asarray(part[m], dtype=np.float32) for m in self.info.modalities}
            labels = np.asarray(part["labels"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"{path}: split {key!r} holds non-numeric features or labels ({reason(exc)}); {_REDOWNLOAD}"
            ) from None
        n = len(labels)
        for m, x in features.items():
            if x.ndim != 3 or len(x) != n:
                raise UsageError(
                    f"{path}: {key}/{m} has shape {list(x.shape)} for {n} labels; expected "
                    f"(N, steps, features) with N = {n}: {_REDOWNLOAD}"
                )
        scores = labels.reshape(n, -1)[:, 0] if n else labels.reshape(0)
        if n == 0 or not np.isfinite(scores).all():
            raise UsageError(f"{path}: split {key!r} has no samples or non-finite labels; {_REDOWNLOAD}")
        return features, scores

    def _clean(self, features: dict[str, np.ndarray]) -> tuple[int, dict[str, int]]:
        """MultiBench's ``-inf`` -> 0 in audio, then any other non-finite value -> 0; returns the counts."""
        audio = features["audio"]
        negative_infinity = int(np.isneginf(audio).sum())
        audio[np.isneginf(audio)] = 0.0
        others = {}
        for m, x in features.items():
            bad = ~np.isfinite(x)
            if bad.any():
                others[m] = int(bad.sum())
                x[bad] = 0.0
        return negative_infinity, others

    def _build(
        self, root: Path, scratch: ScratchArrays, progress: Progress | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        path = self._path(root)
        data = read_feature_pickle(path, trust=self.trust_pickle)
        total = 1 + len(SPLITS)
        if progress is not None:
            progress(1, total)
        arrays: dict[str, np.ndarray] = {}
        notes: dict[str, dict[str, Any]] = {
            "dropped_empty_text": {},
            "audio_neg_inf_set_to_zero": {},
            "nonfinite_set_to_zero": {},
            "positive_fraction": {},
        }
        shapes: dict[str, tuple[int, ...]] = {}
        for step, (split, key) in enumerate(SPLITS.items(), start=2):
            features, scores = self._split_arrays(data, path, key)
            for m, x in features.items():
                if shapes.setdefault(m, x.shape[1:]) != x.shape[1:]:
                    raise UsageError(
                        f"{path}: {key}/{m} samples are {list(x.shape[1:])}, train's "
                        f"{list(shapes[m])}; the splits do not belong together: {_REDOWNLOAD}"
                    )
            notes["audio_neg_inf_set_to_zero"][split], others = self._clean(features)
            if others:
                notes["nonfinite_set_to_zero"][split] = others
            keep = np.ones(len(scores), dtype=bool)
            if self.drop_empty_text:
                keep = features["text"].reshape(len(scores), -1).any(axis=1)
            notes["dropped_empty_text"][split] = int((~keep).sum())
            labels = binary_labels(scores[keep], zero_is_positive=self.zero_is_positive)
            notes["positive_fraction"][split] = float(labels.mean()) if len(labels) else 0.0
            for m, x in features.items():
                arrays[f"{split}_{m}"] = x[keep]
            arrays[f"{split}_label"] = labels
            if progress is not None:
                progress(step, total)
        if any(len(arrays[f"{s}_label"]) == 0 for s in SPLITS):
            raise UsageError(f"{path}: a split has no sample with text features; {_REDOWNLOAD}")
        return arrays, {"label_rule": ">= 0 positive" if self.zero_is_positive else "> 0 positive", **notes}


MOSEI = MoseiDataset()
