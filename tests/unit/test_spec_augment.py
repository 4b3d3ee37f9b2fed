"""SpecAugment masks bands of feature dimensions and spans of frames inside each clip, to the CMVN mean."""

from __future__ import annotations

import torch

from speechgpt.model.spec_augment import SpecAugment, spec_augment


def test_masks_stay_inside_each_clip_and_take_the_fill_value() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 50, 20, generator=g) + 5.0  # no value equals the fill by chance
    before = features.clone()
    lengths = torch.tensor([50, 30, 8])
    fill = torch.full((20,), -7.0)
    settings = SpecAugment(feature_masks=2, feature_width=4, time_masks=2, time_width=6)
    out = spec_augment(features, lengths, settings, fill, generator=g)
    masked = out == -7.0
    assert masked.any() and (out[~masked] == features[~masked]).all()  # everything else as it was
    for b, length in enumerate(lengths.tolist()):
        assert not masked[b, length:].any()  # nothing past the clip's end
        frames = masked[b, :length].all(1)  # whole frames: the time masks
        dims = masked[b, :length].all(0)  # whole dimensions over the clip: the feature masks
        assert frames.sum() <= 2 * 6 and dims.sum() <= 2 * 4
        assert (masked[b, :length] == (frames[:, None] | dims[None, :])).all()  # nothing but bands and spans
    assert torch.equal(features, before)  # the input is left as it was


def test_no_masks_by_default() -> None:
    features = torch.randn(2, 10, 4)
    assert not SpecAugment().active
    assert spec_augment(features, torch.tensor([10, 5]), SpecAugment(), torch.zeros(4)) is features


def test_frozen_ctc_masks_only_while_training() -> None:
    from speechgpt.model.speech_encoder import build_speech_encoder
    from speechgpt.training.frozen_stage import CTCRecognizer
    from stages.frozen_ctc import augmented

    encoder = build_speech_encoder(input_dim=20, frame_rate=100, dim=16, num_layers=1, num_heads=2, ctc_vocab_size=5)
    encoder.set_cmvn(torch.full((20,), 3.0), torch.ones(20))
    model = CTCRecognizer(encoder)
    batch = {"features": torch.randn(2, 40, 20), "feature_lengths": torch.tensor([40, 30])}
    settings = SpecAugment(time_masks=3, time_width=10)
    torch.manual_seed(1)
    trained = augmented(model.train(), batch, settings)["features"]
    assert (trained == 3.0).all(-1).any() and not (batch["features"] == 3.0).any()
    assert augmented(model.eval(), batch, settings) is batch
