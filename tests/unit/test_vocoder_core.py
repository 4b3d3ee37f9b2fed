"""Vocoder runtime: unit expansion, streaming against whole synthesis, save/load round trips (tiny random models)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from unit_hifigan.model import Generator, UnitVocoder

from speechgpt.data.audio import read_audio
from speechgpt.data.corpus import load_corpus
from speechgpt.infer.vocoding import StreamingVocoder
from vocoder.duration import DurationPredictor
from vocoder.load import load_vocoder, save_vocoder
from vocoder.mel_vocoder import LogMel, MelInverter, MelNet, MelSettings
from vocoder.runtime import HifiganRenderer, MelRenderer, Vocoder
from vocoder.streaming import GriffinLimStream
from vocoder.synth import parse_units

SPEAKERS = ["a", "b"]
UNITS = [int(u) for u in np.random.default_rng(0).integers(0, 20, 40)]


def tiny_mel_vocoder(duration: bool = True, lookahead: int | None = None) -> Vocoder:
    torch.manual_seed(0)
    net = MelNet(
        20, n_speakers=2, embedding_dim=16, speaker_dim=8, channels=32, dilations=[1, 2], lookahead_frames=lookahead
    )
    predictor = DurationPredictor(16, 16) if duration else None
    return Vocoder(MelRenderer(net, MelSettings(griffin_lim_iters=8)), predictor, SPEAKERS, route="mel")


def tiny_hifigan_vocoder() -> Vocoder:
    torch.manual_seed(0)
    generator = UnitVocoder(20, speakers=SPEAKERS, embedding_dim=16)
    generator.generator = Generator(32, upsample_input_channels=32)  # the real one is 13.7M parameters
    return Vocoder(HifiganRenderer(generator), DurationPredictor(16, 16), SPEAKERS, route="hifigan")


def stream_all(vocoder: Vocoder, units: list[int], chunk: int, speaker: str | None = None) -> list[np.ndarray]:
    stream = vocoder.stream(speaker)
    return [stream.push(units[i : i + chunk]) for i in range(0, len(units), chunk)] + [stream.finish()]


def test_expansion_given_predicted_and_default() -> None:
    vocoder = tiny_mel_vocoder()
    frames = vocoder.frame_units([3, 5, 7], [2, 1, 3])
    assert frames.tolist() == [3, 3, 5, 7, 7, 7]
    predicted = vocoder.predict_durations(UNITS)
    assert len(predicted) == len(UNITS) and min(predicted) >= 1
    assert len(vocoder(UNITS)) == sum(predicted) * 320
    assert len(vocoder([3, 5, 7], [2, 1, 3])) == 6 * 320
    assert tiny_mel_vocoder(duration=False).predict_durations([1, 2, 3]) == [1, 1, 1]
    with pytest.raises(ValueError, match="unit ids"):
        vocoder([25])
    with pytest.raises(ValueError, match="unknown speaker"):
        vocoder([1, 2], speaker="nobody")


def test_vocoder_satisfies_the_inference_protocol() -> None:
    vocoder = tiny_mel_vocoder()
    assert isinstance(vocoder, StreamingVocoder)
    audio = vocoder(UNITS[:10], speaker="b")
    assert audio.dtype == np.float32 and vocoder.sample_rate == 16_000 and np.isfinite(audio).all()


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_hifigan_stream_equals_whole_synthesis(chunk: int) -> None:
    vocoder = tiny_hifigan_vocoder()
    whole = vocoder(UNITS, speaker="b")
    parts = stream_all(vocoder, UNITS, chunk, speaker="b")
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    if chunk < 10:
        assert sum(len(p) > 0 for p in parts) > 2  # audio really leaves chunk by chunk


@pytest.mark.parametrize("chunk", [1, 4])
def test_stream_predicts_the_durations_of_the_whole(chunk: int) -> None:
    vocoder = tiny_mel_vocoder()
    assert vocoder.duration is not None
    with torch.no_grad():  # predictions around 1.6 frames: rounding errors carry from unit to unit
        vocoder.duration.proj.bias.fill_(math.log(2.6))
    whole = vocoder.predict_durations(UNITS)
    assert len(set(whole)) > 1
    stream = vocoder.stream()
    for i in range(0, len(UNITS), chunk):
        stream.push(UNITS[i : i + chunk])
    stream.finish()
    assert stream.durations == whole


def test_stream_with_given_durations() -> None:
    vocoder = tiny_hifigan_vocoder()
    durations = [1 + u % 3 for u in UNITS]
    stream = vocoder.stream()
    parts = [stream.push(UNITS[i : i + 6], durations[i : i + 6]) for i in range(0, len(UNITS), 6)]
    streamed = np.concatenate([*parts, stream.finish()])
    np.testing.assert_allclose(streamed, vocoder(UNITS, durations), atol=1e-5)
    with pytest.raises(ValueError, match="durations"):
        vocoder.stream().push([1, 2], [1])


@pytest.mark.parametrize("lookahead", [None, 0, 3])
def test_mel_net_reads_exactly_its_context(lookahead: int | None) -> None:
    net = tiny_mel_vocoder(lookahead=lookahead).renderer.net  # type: ignore[attr-defined]
    assert (net.left_context, net.right_context) == {None: (8, 8), 0: (16, 0), 3: (13, 3)}[lookahead]
    frames = torch.randint(0, 20, (1, 60))
    changed = frames.clone()
    changed[0, 30] = (frames[0, 30] + 1) % 20
    with torch.no_grad():
        differs = (net(frames, torch.tensor([0])) - net(changed, torch.tensor([0]))).abs().amax(dim=1)[0] > 0
    touched = differs.nonzero()[:, 0]
    assert (int(touched.min()), int(touched.max())) == (30 - net.right_context, 30 + net.left_context)


@pytest.mark.parametrize("lookahead", [None, 2])
def test_mel_stream_computes_the_offline_mel_frames(lookahead: int | None) -> None:
    vocoder = tiny_mel_vocoder(lookahead=lookahead)
    whole = vocoder.renderer.render(vocoder.frame_units(UNITS), 0)

    class Capture:
        def __init__(self) -> None:
            self.chunks: list[torch.Tensor] = []

        def push(self, rendered: torch.Tensor, final: bool) -> np.ndarray:
            self.chunks.append(rendered)
            return np.zeros(0, dtype=np.float32)

    capture = Capture()
    vocoder.renderer.audio_stream = lambda: capture  # type: ignore[method-assign]
    stream_all(vocoder, UNITS, 3)
    torch.testing.assert_close(torch.cat(capture.chunks, dim=1), whole, atol=1e-5, rtol=1e-5)


def relative_log_mel_error(a: np.ndarray, b: np.ndarray, log_mel: LogMel) -> float:
    """||log-mel(a) - log-mel(b)|| / ||log-mel(b)|| over the common length."""
    n = min(len(a), len(b))
    x, y = log_mel(torch.from_numpy(a[:n])), log_mel(torch.from_numpy(b[:n]))
    return float((x - y).norm() / y.norm())


def test_griffin_lim_stream_matches_whole_inversion_within_tolerance(tiny_corpus: Path) -> None:
    settings = MelSettings()
    log_mel, inverter = LogMel(settings), MelInverter(settings)
    speech = read_audio(load_corpus(tiny_corpus)[0]["audio"]).samples
    speech = speech[: len(speech) // 320 * 320]
    target = log_mel(torch.from_numpy(speech))[:, :-1]
    with torch.inference_mode():
        whole = inverter(target).numpy()
        stream = GriffinLimStream(inverter)
        parts = [stream.push(target[:, i : i + 10], final=False) for i in range(0, target.shape[1], 10)]
        parts.append(stream.push(target[:, :0], final=True))
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape == speech.shape
    assert sum(len(p) > 0 for p in parts) > 3
    # measured on 8 demo clips (chunks of 10 frames): streamed vs whole 0.024; whole vs original 0.049, streamed
    # vs original 0.051 (benchmarks/bench_vocoder.py prints the same comparison for the trained vocoder)
    assert relative_log_mel_error(streamed, whole, log_mel) < 0.05
    assert relative_log_mel_error(streamed, speech, log_mel) < 1.25 * relative_log_mel_error(whole, speech, log_mel)


def test_mel_route_round_trip(tmp_path: Path) -> None:
    vocoder = tiny_mel_vocoder()
    renderer = vocoder.renderer
    assert isinstance(renderer, MelRenderer)
    save_vocoder(
        tmp_path,
        renderer.net,
        route="mel",
        speakers=SPEAKERS,
        default_speaker="b",
        duration=vocoder.duration,
        mel=renderer.inverter.settings,
    )
    loaded = load_vocoder(tmp_path)
    assert loaded.route == "mel" and loaded.default_speaker == "b" and loaded.speakers == SPEAKERS
    np.testing.assert_array_equal(loaded(UNITS, speaker="b"), vocoder(UNITS, speaker="b"))
    assert loaded.predict_durations(UNITS) == vocoder.predict_durations(UNITS)


def test_hifigan_route_round_trip_and_unit_hifigan_loads_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = UnitVocoder(20, speakers=SPEAKERS, embedding_dim=16)  # the default generator shape
    vocoder = Vocoder(HifiganRenderer(generator), DurationPredictor(16, 16), SPEAKERS, route="hifigan")
    save_vocoder(
        tmp_path, generator, route="hifigan", speakers=SPEAKERS, default_speaker=None, duration=vocoder.duration
    )
    reference = vocoder(UNITS[:6], [2] * 6, speaker="b")
    np.testing.assert_array_equal(load_vocoder(tmp_path)(UNITS[:6], [2] * 6, speaker="b"), reference)
    theirs = UnitVocoder.from_pretrained(tmp_path).eval()
    assert theirs.speakers == SPEAKERS
    with torch.inference_mode():
        audio = theirs(torch.tensor([UNITS[:6]]).repeat_interleave(2, dim=1), speaker=torch.tensor([[1]]))
    np.testing.assert_allclose(audio.reshape(-1).numpy(), reference, atol=1e-6)


def test_parse_units_formats() -> None:
    assert parse_units("<sosp><|u12|><|u7|><eosp>") == [12, 7]
    assert parse_units("<sosp><661><588><eosp>") == [661, 588]
    assert parse_units("3 4, 5") == [3, 4, 5]


def test_griffin_lim_renders_a_single_frame() -> None:
    """One log-mel frame is 320 samples, fewer than a centered STFT's reflection padding needs (n_fft // 2)."""
    from vocoder.mel_vocoder import MelInverter, MelSettings

    inverter = MelInverter(MelSettings())
    for frames in (1, 2, 5):
        audio = inverter(torch.zeros(MelSettings().n_mels, frames) - 5.0)
        assert audio.shape == (frames * 320,) and torch.isfinite(audio).all()
