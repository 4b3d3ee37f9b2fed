"""Legacy fairseq CodeHiFiGAN loading: a full-size random UnitVocoder is written in the fairseq key layout (with a
duration predictor) and must load back and synthesize exactly what fairseq's CodeGenerator computes."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from unit_hifigan.compatibility import convert_vocoder_state_dict
from unit_hifigan.model import UnitVocoder

from vocoder.duration import DurationPredictor
from vocoder.legacy import LegacyCodeHiFiGAN, find_checkpoint, legacy_state_dict, load_legacy_vocoder

N_UNITS = 24
UNITS = [3, 17, 5, 0, 23, 9]


@pytest.fixture(scope="module")
def single_speaker() -> tuple[UnitVocoder, DurationPredictor]:
    torch.manual_seed(0)
    vocoder = UnitVocoder(N_UNITS).eval()
    duration = DurationPredictor().eval()
    with torch.no_grad():  # predictions around 3 frames, varying by unit
        duration.proj.bias.fill_(math.log(4.0))
        duration.proj.weight.mul_(3.0)
    return vocoder, duration


def fairseq_code_generator(
    vocoder: UnitVocoder, duration: DurationPredictor, units: list[int], speaker: int | None = None
) -> np.ndarray:
    """fairseq's CodeGenerator.forward(code=..., dur_prediction=True[, spkr=...]) written out."""
    with torch.no_grad():
        x = vocoder.unit_embedding(torch.tensor([units])).transpose(1, 2)
        log_dur_pred = duration(x.transpose(1, 2))
        dur_out = torch.clamp(torch.round(torch.exp(log_dur_pred) - 1).long(), min=1)
        x = torch.repeat_interleave(x, dur_out.view(-1), dim=2)
        if speaker is not None:
            assert vocoder.speaker_embedding is not None
            spkr = vocoder.speaker_embedding(torch.tensor([[speaker]])).transpose(1, 2)
            x = torch.cat([x, spkr.repeat(1, 1, x.shape[-1])], dim=1)
        return vocoder.generator(x).reshape(-1).numpy()


def test_legacy_keys_are_fairseq_names_and_convert_back(single_speaker: tuple[UnitVocoder, DurationPredictor]) -> None:
    vocoder, duration = single_speaker
    legacy = legacy_state_dict(vocoder, duration)
    assert {"dict.weight", "conv_pre.weight_g", "conv_pre.weight_v", "ups.4.weight_v", "conv_post.bias"} <= set(legacy)
    assert "resblocks.14.convs2.2.weight_g" in legacy  # 5 upsamples x 3 kernels, 3 dilations each
    assert "dur_predictor.conv1.0.weight" in legacy and "dur_predictor.proj.bias" in legacy
    without_duration = {k: v for k, v in legacy.items() if not k.startswith("dur_predictor.")}
    back = convert_vocoder_state_dict(without_duration)
    original = vocoder.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[key], original[key]) for key in original)


def test_loads_fairseq_checkpoint_and_matches_code_generator(
    tmp_path: Path, single_speaker: tuple[UnitVocoder, DurationPredictor]
) -> None:
    vocoder, duration = single_speaker
    torch.save({"generator": legacy_state_dict(vocoder, duration)}, tmp_path / "g_00500000")
    config = {
        "upsample_rates": [5, 4, 4, 2, 2],
        "upsample_kernel_sizes": [11, 8, 8, 4, 4],
        "upsample_initial_channel": 512,
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "num_embeddings": N_UNITS,
        "embedding_dim": 128,
        "model_in_dim": 128,
        "sampling_rate": 16000,
        "dur_predictor_params": {
            "encoder_embed_dim": 128,
            "var_pred_hidden_dim": 128,
            "var_pred_kernel_size": 3,
            "var_pred_dropout": 0.5,
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_legacy_vocoder(tmp_path)  # the folder: finds g_00500000 and config.json
    assert isinstance(loaded, LegacyCodeHiFiGAN)
    assert loaded.duration is not None and loaded.sample_rate == 16_000 and loaded.hop_length == 320

    durations = loaded.predict_durations(UNITS)
    assert min(durations) >= 1 and len(set(durations)) > 1  # predicted, not all ones
    audio = loaded(UNITS)
    assert audio.dtype == np.float32
    assert audio.shape == (sum(durations) * 320,)
    np.testing.assert_allclose(audio, fairseq_code_generator(vocoder, duration, UNITS), atol=1e-5)

    given = loaded(UNITS, durations=[1, 2, 1, 1, 1, 1])
    assert given.shape == (7 * 320,)
    assert loaded([]).shape == (0,)
    with pytest.raises(ValueError, match="unit ids"):
        loaded([N_UNITS])


def test_multi_speaker_without_config(tmp_path: Path) -> None:
    torch.manual_seed(1)
    vocoder = UnitVocoder(N_UNITS, speakers=["a", "b", "c"]).eval()
    duration = DurationPredictor().eval()
    path = tmp_path / "vocoder.pt"
    torch.save({"generator": legacy_state_dict(vocoder, duration)}, path)
    loaded = load_legacy_vocoder(path, speakers=["ana", "bo", "cy"])
    assert loaded.speakers == ["ana", "bo", "cy"]
    units = UNITS[:3]
    for index, name in enumerate(loaded.speakers):
        np.testing.assert_allclose(
            loaded(units, speaker=name), fairseq_code_generator(vocoder, duration, units, index), atol=1e-5
        )
    assert not np.allclose(loaded(units, speaker="ana"), loaded(units, speaker="bo"))
    np.testing.assert_array_equal(loaded(units), loaded(units, speaker="ana"))  # first speaker by default
    with pytest.raises(ValueError, match="unknown speaker"):
        loaded(units, speaker="zed")


def test_no_duration_predictor_means_one_frame_per_unit(tmp_path: Path) -> None:
    torch.manual_seed(2)
    vocoder = UnitVocoder(N_UNITS).eval()
    torch.save({"generator": legacy_state_dict(vocoder)}, tmp_path / "g_00000100")
    loaded = load_legacy_vocoder(tmp_path)
    assert loaded.duration is None
    assert loaded(UNITS).shape == (len(UNITS) * 320,)
    with torch.no_grad():
        expected = vocoder(torch.tensor([UNITS])).reshape(-1).numpy()
    np.testing.assert_allclose(loaded(UNITS), expected, atol=1e-5)


def test_pickled_objects_need_trust_and_config_must_agree(tmp_path: Path) -> None:
    torch.manual_seed(3)
    vocoder = UnitVocoder(N_UNITS).eval()
    state = legacy_state_dict(vocoder)
    path = tmp_path / "g_00000001"
    torch.save({"generator": state, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match="trust_checkpoint=True"):
        load_legacy_vocoder(path)
    assert load_legacy_vocoder(path, trust_checkpoint=True).n_units == N_UNITS

    (tmp_path / "config.json").write_text(json.dumps({"num_embeddings": 1000}))
    with pytest.raises(ValueError, match="num_embeddings=1000"):
        load_legacy_vocoder(path, trust_checkpoint=True)
    (tmp_path / "config.json").write_text(json.dumps({"dur_predictor_params": {"encoder_embed_dim": 128}}))
    with pytest.raises(ValueError, match="no dur_predictor"):
        load_legacy_vocoder(path, trust_checkpoint=True)


def test_find_checkpoint_prefers_named_files_then_newest_step(tmp_path: Path) -> None:
    for name in ("g_00000900", "g_00001000", "config.json"):
        (tmp_path / name).write_bytes(b"")
    assert find_checkpoint(tmp_path).name == "g_00001000"
    (tmp_path / "vocoder.pt").write_bytes(b"")
    assert find_checkpoint(tmp_path).name == "vocoder.pt"
    with pytest.raises(FileNotFoundError):
        find_checkpoint(tmp_path / "missing")
