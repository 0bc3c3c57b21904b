"""MVSA-Single: a tweet's image and its text, sentiment positive / neutral / negative.

Expected layout under the data root (``--data-root`` or ``BENCH_DATA``), QMF's files as distributed
(``QingyangZhang/QMF``, ``text-image-classification/datasets/MVSA_Single/``)::

    MVSA_Single/train.jsonl  dev.jsonl  test.jsonl   one JSON object a line: {"id", "label", "text", "img"}
    MVSA_Single/data/<id>.jpg                        the images the rows name ("img": "data/<id>.jpg")

The images come from the MVSA-Single release (Kaggle ``vincemarcs/mvsasingle``, linked by QMF; original:
MCRLab, University of Ottawa). **Splits**: QMF's 1,555 / 518 / 519 pairs: the 2,592 pairs of the original
4,869 whose text label and image label agree; dev.jsonl is the validation split. MLA trains on the same 1,555
rows but tests on a different list of 519 (``data/my_test_mvsa.txt``: 487 of QMF's test rows and 32 of its
dev rows), so its numbers are not on this test split.

**Classes**: 3, indexed in order of first appearance in ``train.jsonl``, as QMF does
(``src/data/helpers.py`` ``get_labels_and_frequencies``); ``class_order="sorted"`` gives MLA's alphabetical
order (negative, neutral, positive). A train.jsonl without exactly 3 labels is refused.

**Image** -> ``image`` of kind ``frames_resnet18`` (ResNet-18 from scratch), shape (3, 224, 224) uint8: decoded
with PIL, shorter side resized to 256 (bilinear), centre 224 x 224, as QMF's ``get_transforms``; the encoder
normalises uint8 batches with the ImageNet statistics (QMF uses its Food-101 mean/std). About 390 MB in the
cache. No training-time augmentation.

**Text** -> ``text`` of kind ``tokens``, shape (2, 128): ids and attention mask from the text encoder's
tokenizer (default the shipped all-MiniLM-L6-v2) with its special tokens, padded and truncated to
``max_tokens`` = 128 (MLA pads to 256, QMF to 512): tweets were at most 140 characters when MVSA was
collected, so few if any are cut; the cache manifest records how many were (``texts_truncated``). The text
is used as written (BalanceBenchmark's cleaning of ``RT``, URLs and ``#`` is not applied, as in QMF).

Preparation runs once into the cache (:mod:`bench.media.cache`): ``python -m bench data prepare mvsa`` or the first
``load``. **Licence**: none stated; Twitter content: research use only, do not redistribute tweets or images.
"""

from __future__ import annotations

from bench.datasets._jsonl_image_text import JsonlImageText
from bench.protocol import DatasetInfo

__all__ = ["INFO", "MVSA"]

INFO = DatasetInfo(
    name="mvsa",
    modalities=("image", "text"),
    num_classes=3,
    version="1",
    license="no licence stated by the authors; Twitter content: research use only, do not redistribute",
    citation="Niu, Zhu, Pang and El Saddik, Sentiment Analysis on Multi-View Social Data, MMM 2016 (MVSA); "
    "splits of Zhang et al., QMF, ICML 2023 (github.com/QingyangZhang/QMF)",
    homepage="https://www.kaggle.com/datasets/vincemarcs/mvsasingle (images) and "
    "https://github.com/QingyangZhang/QMF/tree/main/text-image-classification/datasets/MVSA_Single (jsonl splits)",
    description="tweet image (ResNet-18 from scratch, 224 px) + tweet text (MiniLM), sentiment in 3 classes",
    splits="QMF's train.jsonl 1,555 / dev.jsonl 518 (the validation split) / test.jsonl 519",
    layout='MVSA_Single/{train,dev,test}.jsonl (QMF\'s rows {"id","label","text","img"}) and MVSA_Single/data/<id>.jpg',
    # Budget choices, not measured on this dataset (no copy of it was at hand when the adapter was written).
    default_epochs=20,
    default_batch_size=64,
)

MVSA = JsonlImageText(info=INFO, folder="MVSA_Single", resize=256, image_size=224, max_tokens=128)
