"""Multi-view feature benchmarks stored as MATLAB ``.mat`` files (the TMC / RCML / CCML / Completer family).

Expected layout under the data root (``--data-root`` or ``BENCH_DATA``), as the files come from their
repositories::

    multiview/handwritten/handwritten_6views.mat   x1_train..x6_train, x1_test..x6_test, gt_train, gt_test
    multiview/scene15/Scene-15.mat                 X (1x3 cell of N x d), Y (N x 1, 1-based)
    multiview/landuse21/LandUse-21.mat             X (1x3 cell of N x d), Y (N x 1, 1-based)
    multiview/cub/CUB.mat                          X (1x2 cell of d x N: transposed), gt (N x 1, 1-based)

Preprocessing follows the source loaders (min-max scaling of every view to [0, 1], labels shifted to start
at 0) with one change: the scaler is fitted on the training split only, so no test
statistic leaks into training. Handwritten keeps TMC's fixed 1,600/400 split. The others ship no split; the
source repositories cut 80/20 at random and unseeded, so here the cut is stratified with a fixed seed
(``SPLIT_SEED``), part of the dataset's version. Validation is carved from train by the harness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data import stratified_rows
from bench.errors import UsageError
from bench.protocol import DatasetInfo, LoadedData, ModalitySpec, SplitData

__all__ = ["CUB", "HANDWRITTEN", "LANDUSE21", "SCENE15", "MultiViewDataset"]

SPLIT_SEED = 0
TEST_FRACTION = 0.2

_Arrays = tuple[list[np.ndarray], np.ndarray, list[np.ndarray] | None, np.ndarray | None]


def _loadmat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, OSError, MatReadError... on a damaged file
        raise UsageError(
            f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'}); "
            "download it again"
        ) from None


def _field(mat: dict, name: str, path: Path) -> np.ndarray:
    if name not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise UsageError(f"{path} has no variable {name!r} (it has {keys}); is it the right file?")
    return mat[name]


def _read_cell_file(path: Path, label_key: str, transposed: bool) -> _Arrays:
    mat = _loadmat(path)
    views = [np.asarray(v, dtype=np.float64) for v in _field(mat, "X", path).ravel()]
    if transposed:
        views = [v.T for v in views]
    labels = np.asarray(_field(mat, label_key, path)).ravel().astype(np.int64)
    return views, labels, None, None


def _read_presplit_file(path: Path, num_views: int) -> _Arrays:
    mat = _loadmat(path)
    train = [np.asarray(_field(mat, f"x{i}_train", path), dtype=np.float64) for i in range(1, num_views + 1)]
    test = [np.asarray(_field(mat, f"x{i}_test", path), dtype=np.float64) for i in range(1, num_views + 1)]
    y_train = np.asarray(_field(mat, "gt_train", path)).ravel().astype(np.int64)
    y_test = np.asarray(_field(mat, "gt_test", path)).ravel().astype(np.int64)
    return train, y_train, test, y_test


def _stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): ``TEST_FRACTION`` of every class, rounded (a class may give none)."""
    test = stratified_rows(labels, TEST_FRACTION, SPLIT_SEED, at_least_one=False)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def _minmax(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, span = train.min(0), train.max(0) - train.min(0)
    span[span == 0] = 1.0
    return (train - low) / span, (test - low) / span


@dataclass(frozen=True)
class MultiViewDataset:
    info: DatasetInfo
    relative_path: str
    reader: Callable[[Path], _Arrays]

    def _path(self, data_root: Path | None) -> Path | None:
        return None if data_root is None else Path(data_root) / self.relative_path

    def available(self, data_root: Path | None) -> tuple[bool, str]:
        path = self._path(data_root)
        if path is None:
            return (
                False,
                f"no data root; set BENCH_DATA or --data-root to a folder with {self.relative_path} "
                f"({self.info.homepage})",
            )
        if not path.is_file():
            return False, f"{path} not found; expected {self.relative_path} under the data root ({self.info.homepage})"
        return True, ""

    def load(self, data_root: Path | None) -> LoadedData:
        path = self._path(data_root)
        views, labels, test_views, test_labels = self.reader(path)
        if len(views) != len(self.info.modalities):
            raise UsageError(
                f"{path} has {len(views)} views, expected {len(self.info.modalities)}; is it the right file?"
            )
        if test_views is None:
            train_rows, test_rows = _stratified_split(labels)
            test_views, test_labels = [v[test_rows] for v in views], labels[test_rows]
            views, labels = [v[train_rows] for v in views], labels[train_rows]
        offset = min(labels.min(), test_labels.min())
        if max(labels.max(), test_labels.max()) - offset + 1 != self.info.num_classes:
            raise UsageError(f"{path}: labels span {offset}..{labels.max()}, expected {self.info.num_classes} classes")
        train_x, test_x = {}, {}
        for name, tr, te in zip(self.info.modalities, views, test_views):
            tr, te = _minmax(tr, te)
            train_x[name] = torch.from_numpy(tr.astype(np.float32))
            test_x[name] = torch.from_numpy(te.astype(np.float32))
        modalities = tuple(ModalitySpec(n, (int(train_x[n].shape[1]),)) for n in self.info.modalities)
        return LoadedData(
            modalities,
            train=SplitData(train_x, torch.from_numpy(labels - offset)),
            test=SplitData(test_x, torch.from_numpy(test_labels - offset)),
        )


#: The split of the datasets that ship none (see the module docstring).
_STRATIFIED = "stratified 80/20 train/test, seed 0; validation carved from train"


def _dataset(
    name: str,
    modalities: tuple[str, ...],
    num_classes: int,
    relative_path: str,
    reader: Callable[[Path], _Arrays],
    layout_note: str = "",
    **info: str,
) -> MultiViewDataset:
    """One .mat file's dataset; its ``layout`` is the file's path under the data root (and ``layout_note``)."""
    layout = f"{relative_path} {layout_note}" if layout_note else relative_path
    info = DatasetInfo(
        name=name,
        modalities=modalities,
        num_classes=num_classes,
        version="1",
        default_epochs=30,
        default_batch_size=64,
        layout=layout,
        **info,
    )
    return MultiViewDataset(info, relative_path, reader)


def _cell_file(label_key: str, transposed: bool) -> Callable[[Path], _Arrays]:
    return lambda path: _read_cell_file(path, label_key, transposed=transposed)


HANDWRITTEN = _dataset(
    "handwritten",
    ("pixel", "fourier", "profile", "zernike", "karhunen_loeve", "morphological"),
    10,
    "multiview/handwritten/handwritten_6views.mat",
    lambda path: _read_presplit_file(path, 6),
    license="CC BY 4.0 (UCI Multiple Features)",
    citation="Duin, R. Multiple Features [Dataset], UCI Machine Learning Repository; split of Han et al., "
    "Trusted Multi-View Classification, ICLR 2021",
    homepage="https://github.com/hanmenghan/TMC (TMC ICLR/datasets/handwritten_6views.mat)",
    description="2,000 handwritten digits, 6 feature views",
    splits="1,600 train / 400 test (TMC's fixed split); validation carved from train",
)
SCENE15 = _dataset(
    "scene15",
    ("view1", "view2", "view3"),
    15,
    "multiview/scene15/Scene-15.mat",
    _cell_file("Y", transposed=False),
    license="research data (see the Completer repository, MIT)",
    citation="Lazebnik, Schmid, Ponce, CVPR 2006; features of Lin et al., COMPLETER, CVPR 2021",
    homepage="https://github.com/XLearning-SCU/2021-CVPR-Completer (data/Scene-15.mat)",
    description="4,485 scene images, 3 opaque feature views",
    splits=_STRATIFIED,
)
LANDUSE21 = _dataset(
    "landuse21",
    ("view1", "view2", "view3"),
    21,
    "multiview/landuse21/LandUse-21.mat",
    _cell_file("Y", transposed=False),
    license="research data (see the Completer repository, MIT)",
    citation="Yang and Newsam, ACM GIS 2010; features of Lin et al., COMPLETER, CVPR 2021",
    homepage="https://github.com/XLearning-SCU/2021-CVPR-Completer (data/LandUse-21.mat)",
    description="2,100 aerial images, 3 opaque feature views",
    splits=_STRATIFIED,
)
CUB = _dataset(
    "cub",
    ("image", "text"),
    10,
    "multiview/cub/CUB.mat",
    _cell_file("gt", transposed=True),
    layout_note="(views stored d x N)",
    license="research use (CUB-200-2011 and Reed et al. descriptions)",
    citation="Wah et al., CUB-200-2011; Reed et al., CVPR 2016; features as in Han et al., ICLR 2021",
    homepage="https://github.com/Lihong-Liu/CCML (data/CUB.mat)",
    description="600 birds of 10 classes: image (1024-d) and text (300-d) features",
    splits=_STRATIFIED,
)
