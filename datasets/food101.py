"""UPMC Food-101: a food photo and the text of the web page it was found on, 101 classes.

Expected layout under the data root (``--data-root`` or ``BENCH_DATA``), QMF's files as distributed
(``QingyangZhang/QMF``, ``text-image-classification/datasets/food101/``, following MMBT)::

    food101/train.jsonl  dev.jsonl  test.jsonl      one JSON object a line: {"id", "label", "text", "img"}
    food101/images/...                              the images the rows name, relative to food101/
                                                    (images/{train,test}/<label>/<label>_<n>.jpg)

The images and texts come from the UPMC Food-101 release (Kaggle ``gianmarco96/upmcfood101``, linked by QMF);
the jsonl files from QMF's repository. **Splits**: QMF's train / dev (5,000, carved by MMBT from the original
training images; used here as the validation split) / test (22,715). MLA trains on the same train rows and
tests on 22,714 of the test rows (``data/my_{train,test}_food.txt``), without a validation split.

**Classes**: 101, indexed in order of first appearance in ``train.jsonl``, as QMF does
(``src/data/helpers.py`` ``get_labels_and_frequencies``: ``Counter.keys()``). MLA sorts the class names
instead (``dataset/dataset.py``: ``sorted(classes)``); ``class_order="sorted"`` gives that order. The order
changes label indices only, not accuracy or macro-F1. A train.jsonl without exactly 101 labels is refused.

**Image** -> ``image`` of kind ``frames_resnet18`` (a ResNet-18 from scratch), shape (3, 112, 112) uint8 by
default: decoded with PIL, the shorter side resized to ``resize`` = 128 (bilinear), the centre 112 x 112 kept;
the encoder normalises uint8 batches with the ImageNet statistics. QMF uses ``Resize(256)`` +
``CenterCrop(224)`` and its own Food-101 mean/std; MLA ``Resize(256)`` + ``CenterCrop(256)`` (bicubic). The
default is QMF's geometry at half the side because of memory: its about 90,700 images take 3.4 GB in the
cache at 112 x 112 against 13.7 GB at 224 x 224, and the harness holds a whole split in memory once a missing rate
above 0 masks it (9.5 GB for train at 224). ``replace(FOOD101, resize=256, image_size=224)`` registered
under its own name gives QMF's size. No training-time augmentation (QMF has none either).

**Text** -> ``text`` of kind ``tokens``, shape (2, 256): input ids and attention mask from the tokenizer of
the text encoder (default the shipped all-MiniLM-L6-v2, whose uncased WordPiece vocabulary is BERT's), with
its special tokens ([CLS] ... [SEP]), padded and truncated to ``max_tokens`` = 256 (MLA's length; QMF keeps
512 BERT tokens). How many texts were cut is recorded in the cache manifest (``texts_truncated``).
``text_model`` names another local Hugging Face model directory, used both to tokenise and as the encoder.

Preparation runs once into the cache (:mod:`bench.media.cache`): ``python -m bench data prepare food101`` or the
first ``load``. **Licence**: none stated; the images and texts were crawled from the web: research use
only, do not redistribute.
"""

from __future__ import annotations

from bench.datasets._jsonl_image_text import JsonlImageText
from bench.protocol import DatasetInfo

__all__ = ["FOOD101", "INFO"]

INFO = DatasetInfo(
    name="food101",
    modalities=("image", "text"),
    num_classes=101,
    version="1",
    license="no licence stated by the authors; web-crawled images and text: research use only, do not redistribute",
    citation="Wang, Kumar, Thome, Cord and Precioso, Recipe recognition with large multimodal food dataset, "
    "ICME Workshops 2015 (UPMC Food-101); splits of Kiela et al., MMBT, 2019, as distributed by Zhang et al., "
    "QMF, ICML 2023 (github.com/QingyangZhang/QMF)",
    homepage="https://www.kaggle.com/datasets/gianmarco96/upmcfood101 (images, texts) and "
    "https://github.com/QingyangZhang/QMF/tree/main/text-image-classification/datasets/food101 (jsonl splits)",
    description="food photo (ResNet-18 from scratch, 112 px) + web-page text (MiniLM), 101 classes",
    splits="QMF's train.jsonl / dev.jsonl (5,000, the validation split) / test.jsonl (22,715)",
    layout='food101/{train,dev,test}.jsonl (QMF\'s rows {"id","label","text","img"}) and the images they name '
    "under food101/ (images/{train,test}/<label>/<label>_<n>.jpg)",
    # Budget choices, not measured on this dataset (no copy of it was at hand when the adapter was written).
    default_epochs=20,
    default_batch_size=64,
)

FOOD101 = JsonlImageText(info=INFO, folder="food101", resize=128, image_size=112, max_tokens=256)
