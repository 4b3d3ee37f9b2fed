"""Streaming listening of the frozen-LLM variant on a tiny random model folder: the folder alone loads it, chunk by
chunk listening gives the full pass's state logits, constructed state heads decide where they were built to (answer
-> a greedy text answer equal to a full pass; ignore -> no answer and a fresh utterance), latencies are ordered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechgpt.infer.cached_lm import CachedLM
from speechgpt.infer.frozen_loading import FrozenModel, load_frozen_model, model_variant, resolve_variant, template_ids
from speechgpt.infer.listening import FrozenListener, ListenConfig
from speechgpt.model.frozen_lm import chunk_end_positions
from speechgpt.model.tiny import build_tiny_lm
from tests.chat_fixtures import FROZEN_FEATURES, chirp, make_frozen_model

CLIP_S = 1.37  # 135 fbank frames -> 33 encoder frames -> 9 chunks, the last one partial (one frame, no embedding)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_frozen_model(tmp_path_factory.mktemp("frozen"), template="{speech}? {target}.")


@pytest.fixture
def frozen(folder: Path) -> FrozenModel:
    return load_frozen_model(folder, device="cpu")


def clip() -> np.ndarray:
    noise = np.random.default_rng(0).standard_normal(int(CLIP_S * 16_000)).astype(np.float32)
    return chirp(CLIP_S) + 0.05 * noise


def full_pass_hidden(frozen: FrozenModel, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(hidden states of [prefix, prompt, speech] in one pass, chunk end positions, speech start)."""
    model = frozen.model
    with torch.no_grad():
        feats = frozen.features([torch.from_numpy(samples)])[0][None]
        speech = model.speech_embeddings(feats, torch.tensor([feats.shape[1]]))
        embeds, frame_lengths = speech.embeds, speech.frame_lengths
        prefix = model.embed_tokens(torch.tensor([frozen.prefix_ids]))
        inputs = torch.cat([prefix, model.prompt_embeddings()[None], embeds], 1)
        hidden = model.hidden_states(inputs, torch.ones(1, inputs.shape[1], dtype=torch.long))
    start = len(frozen.prefix_ids) + model.prompt.num_embeddings
    chunks = int(model.encoder.num_chunks(torch.tensor([feats.shape[1]])))
    positions, _ = chunk_end_positions(model, torch.tensor([start]), frame_lengths, chunks, speech.words)
    return hidden, positions[0], start


def build_state_head(frozen: FrozenModel, state: int, at_chunk: int) -> None:
    """A state head that says `state` at chunk `at_chunk` of clip() and keeps listening at every other chunk,
    solved from the full pass's hidden states at the chunk ends."""
    hidden, positions, _ = full_pass_hidden(frozen, clip())
    h = hidden[0, positions]  # (chunks, hidden)
    target = torch.full((h.shape[0],), -4.0)
    target[at_chunk] = 4.0
    design = torch.cat([h, torch.ones(h.shape[0], 1)], 1)
    solution = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    head = frozen.model.state_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[state], head.bias[state] = solution[:-1], solution[-1]


def test_the_folder_alone_says_its_variant_and_loads(folder: Path, frozen: FrozenModel, tmp_path: Path) -> None:
    meta = json.loads((folder / "speech_modules.json").read_text())
    assert meta["variant"] == "frozen" and Path(meta["backbone"]).is_dir()
    assert model_variant(folder) == "frozen" and model_variant(tmp_path) == "unified"
    assert resolve_variant(folder, "auto") == "frozen" and resolve_variant(tmp_path, "unified") == "unified"
    with pytest.raises(ValueError, match="no frozen-variant"):
        resolve_variant(tmp_path, "frozen")
    with pytest.raises(ValueError, match="holds frozen-variant speech modules"):
        resolve_variant(folder, "unified")
    assert frozen.features.kind == "fbank" and frozen.features.dim == FROZEN_FEATURES["num_mel_bins"]
    assert frozen.prefix_ids == [frozen.tokenizer.bos_token_id]  # the template "{speech}? {target}."
    # fed as in training: the text between {speech} and {target} less its trailing space (trained with the answer)
    assert frozen.answer_prefix_ids == frozen.tokenizer("?", add_special_tokens=False)["input_ids"]
    assert frozen.answer_end == "."
    assert frozen.stage == "frozen_qa" and frozen.trailing_silence_s == 0.48 and not frozen.model.training
    assert FrozenListener(frozen).trailing_silence_s == 0.48
    assert FrozenListener(frozen, ListenConfig(trailing_silence_s=0.0)).trailing_silence_s == 0.0
    encoder_only = {k: meta[k] for k in ("variant", "encoder", "features")} | {"stage": "frozen-ctc"}
    (tmp_path / "speech_modules.json").write_text(json.dumps(encoder_only))  # input stage 1's export
    with pytest.raises(ValueError, match=r"speech encoder alone \(stage frozen-ctc\)"):
        load_frozen_model(tmp_path, device="cpu")
    meta["states"] = ["keep_listening", "ignore", "answer"]
    (tmp_path / "speech_modules.json").write_text(json.dumps(meta))
    (tmp_path / "speech_modules.safetensors").symlink_to(folder / "speech_modules.safetensors")
    with pytest.raises(ValueError, match="classes"):
        load_frozen_model(tmp_path, device="cpu")
    other = build_tiny_lm("llama", frozen.tokenizer, hidden_size=64, num_layers=2, num_heads=4, seed=9)
    other.save_pretrained(tmp_path / "other")
    frozen.tokenizer.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="trained on another LLM"):
        load_frozen_model(folder, backbone=tmp_path / "other", device="cpu")


def test_the_template_says_what_surrounds_the_speech(frozen: FrozenModel) -> None:
    tokenizer = frozen.tokenizer
    prefix, middle, end = template_ids(tokenizer, {"text": "what is {speech}? the answer is {target}. ", "eos": True})
    assert prefix == [tokenizer.bos_token_id, *tokenizer("what is ", add_special_tokens=False)["input_ids"]]
    # the stages feed the text between less its trailing space, which they train with the answer's first word
    assert middle == tokenizer("? the answer is", add_special_tokens=False)["input_ids"] and middle
    assert end == "."
    assert template_ids(tokenizer, None) == ([tokenizer.bos_token_id], [], "")
    with pytest.raises(ValueError, match="needs one"):
        template_ids(tokenizer, {"text": "{target} {speech}"})


@pytest.mark.parametrize("piece", [2560, 999])
def test_streaming_gives_the_full_pass_state_logits(frozen: FrozenModel, piece: int) -> None:
    check_streamed_state_logits(frozen, piece)


def test_streaming_words_gives_the_full_pass_state_logits(tmp_path: Path) -> None:
    """An adapter that reads words: each word is fed once whole, so a stream decides on what the full pass gives."""
    frozen = load_frozen_model(make_frozen_model(tmp_path, template="{speech}? {target}.", words=True), device="cpu")
    model = frozen.model
    feats = frozen.features([torch.from_numpy(clip())])[0][None]
    with torch.no_grad():  # a CTC head whose best path on this clip has words, spaces and pauses
        frames = model.encoder(feats, torch.tensor([feats.shape[1]]))[0][0]
        head = model.encoder.ctc_head
        head.weight.copy_(torch.linalg.svd(frames - frames.mean(0), full_matrices=False).Vh[:6] * 30)
        head.bias.copy_(-(head.weight @ frames.mean(0)))
        words = model.speech_embeddings(feats, torch.tensor([feats.shape[1]])).words[0]
    assert model.word_space == 1 and len(words) >= 3 and words[0].whole_at is not None
    check_streamed_state_logits(frozen, 999)
    with torch.no_grad():  # and the words it heard are the full pass's best tokens, one per word (eval asr's text)
        best = model.speech_embeddings(feats, torch.tensor([feats.shape[1]])).token_logits[0].argmax(-1).tolist()
    listener = FrozenListener(frozen, ListenConfig(decide=False))
    listener.push(clip())
    listener.finish()
    assert listener.turn.heard_tokens == best and len(best) == len(words)
    assert listener.heard_text() == frozen.tokenizer.decode(best, skip_special_tokens=True).strip()


def test_only_an_adapter_that_reads_words_has_heard_words(frozen: FrozenModel) -> None:
    listener = FrozenListener(frozen, ListenConfig(decide=False))
    listener.push(clip())
    assert listener.turn.heard_tokens == []
    with pytest.raises(ValueError, match="reads words"):
        listener.heard_text()


def check_streamed_state_logits(frozen: FrozenModel, piece: int) -> None:
    with torch.no_grad():
        frozen.model.state_head.bias.copy_(torch.tensor([60.0, 0.0, 0.0]))  # keep listening to the end
    samples = clip()
    hidden, positions, _ = full_pass_hidden(frozen, samples)
    full = frozen.model.state_logits(hidden[0, positions]).detach()
    listener = FrozenListener(frozen)
    decisions = []
    for offset in range(0, len(samples), piece):
        decisions += listener.push(samples[offset : offset + piece])
    assert len(decisions) == len(positions) - 1  # the last chunk waits for the end of the stream
    decisions += listener.finish()
    streamed = torch.tensor([d.logits for d in decisions])
    assert streamed.shape == full.shape == (9, 3)
    torch.testing.assert_close(streamed, full, rtol=0, atol=2e-4)
    assert [d.chunk for d in decisions] == list(range(9)) and listener.turn.outcome is None
    assert [round(d.audio_s, 2) for d in decisions] == [*(round(0.16 * (c + 1), 2) for c in range(8)), CLIP_S]


def test_windowed_unit_encoder_frames_stream_to_the_full_pass(tmp_path: Path) -> None:
    """A model trained on windowed unit-encoder frames hears a stream exactly as it trained: the frames of each
    window come once the window is heard, and the state logits equal the full pass's."""
    features = {"kind": "unit_encoder", "encoder_kind": "logmel", "window_s": 0.32, "context_s": 0.32}
    frozen = load_frozen_model(
        make_frozen_model(tmp_path, state_bias=(60.0, 0.0, 0.0), features=features), device="cpu"
    )
    assert frozen.features.streamable and frozen.features.window == 5120
    samples = clip()
    hidden, positions, _ = full_pass_hidden(frozen, samples)
    full = frozen.model.state_logits(hidden[0, positions]).detach()
    listener = FrozenListener(frozen)
    decisions = []
    for offset in range(0, len(samples), 999):
        decisions += listener.push(samples[offset : offset + 999])
    assert [d.audio_s for d in decisions][:2] == [0.16, 0.32]
    assert [d.heard_s for d in decisions][:2] == [6 * 999 / 16_000] * 2, "a window's chunks come once it is heard"
    decisions += listener.finish()
    torch.testing.assert_close(torch.tensor([d.logits for d in decisions]), full, rtol=0, atol=2e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_cached_lm_equals_one_pass(frozen: FrozenModel, family: str) -> None:
    lm = build_tiny_lm(family, frozen.tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=3)  # type: ignore[arg-type]
    embeds = torch.randn(1, 9, 32)
    with torch.no_grad():
        whole = lm.base_model(inputs_embeds=embeds, attention_mask=torch.ones(1, 9, dtype=torch.long)).last_hidden_state
        cached = CachedLM(lm)
        pieces = torch.cat([cached.feed(embeds[:, :4]), cached.feed(embeds[:, 4:5]), cached.feed(embeds[:, 5:])], 1)
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-5)
    assert cached.length == 9


def test_a_bfloat16_llm_listens_with_float32_speech_modules(folder: Path) -> None:
    frozen = load_frozen_model(folder, dtype="bfloat16", device="cpu")
    assert frozen.model.lm.dtype == torch.bfloat16 and frozen.model.encoder.norm.weight.dtype == torch.float32
    with torch.no_grad():
        frozen.model.state_head.bias.copy_(torch.tensor([60.0, 0.0, 0.0]))
    turn = FrozenListener(frozen, ListenConfig(trailing_silence_s=0.0)).listen(clip(), max_new_tokens=2)
    assert turn.states == [0] * 9 and turn.forced and turn.outcome == "answer"


def test_answer_decided_at_a_chosen_chunk_starts_the_text_answer_there(frozen: FrozenModel) -> None:
    build_state_head(frozen, state=1, at_chunk=5)
    frozen.answer_prefix_ids = frozen.tokenizer("? the answer is", add_special_tokens=False)["input_ids"]
    listener = FrozenListener(frozen, ListenConfig(trailing_silence_s=0.32))
    turn = listener.listen(clip(), max_new_tokens=6)
    assert turn.states == [0, 0, 0, 0, 0, 1] and turn.outcome == "answer" and not turn.forced
    assert turn.speech_end_s is not None and turn.decision_s is not None and turn.first_token_s is not None
    assert turn.speech_end_s <= turn.decision_s <= turn.first_token_s <= (turn.last_token_s or 0)
    assert turn.speech_end_audio_s == pytest.approx(0.16 * 7)  # chunk 5 ends 15 ms into push 7: decided there
    latencies = turn.latencies()
    assert 0 <= latencies["decision_s"] <= latencies["first_token_s"]  # type: ignore[operator]
    assert turn.to_json()["decision_chunk"] == 5 and turn.to_json()["states"][-1] == "answer"
    # the cached greedy answer is the full pass's greedy continuation of chunk 5's last speech embedding and the
    # answer prefix
    assert len(turn.tokens) == 6 and turn.text
    _, positions, _ = full_pass_hidden(frozen, clip())
    last = int(positions[5]) + len(frozen.answer_prefix_ids)
    with torch.no_grad():
        text = torch.tensor([[*frozen.answer_prefix_ids, *turn.tokens]])
        inputs = torch.cat([_inputs_until(frozen, int(positions[5])), frozen.model.embed_tokens(text)], 1)
        again = frozen.model.hidden_states(inputs, torch.ones(1, inputs.shape[1], dtype=torch.long))
        greedy = frozen.model.token_logits(again[0, last:]).argmax(-1)
    assert turn.llm_inputs == last + 1
    assert greedy[:-1].tolist() == turn.tokens


def _inputs_until(frozen: FrozenModel, last: int) -> torch.Tensor:
    model = frozen.model
    feats = frozen.features([torch.from_numpy(clip())])[0][None]
    embeds = model.speech_embeddings(feats, torch.tensor([feats.shape[1]])).embeds
    prefix = model.embed_tokens(torch.tensor([frozen.prefix_ids]))
    return torch.cat([prefix, model.prompt_embeddings()[None], embeds], 1)[:, : last + 1]


def test_answer_stops_at_eos_at_the_templates_end_or_at_max_length(frozen: FrozenModel) -> None:
    build_state_head(frozen, state=1, at_chunk=2)
    speak_whole_words(frozen)
    frozen.answer_end = ""
    listener = FrozenListener(frozen)
    cut = listener.listen(clip(), max_new_tokens=5)
    tokens = cut.tokens
    assert len(tokens) == 5 and not cut.ended
    first_new = next((i for i in range(1, 5) if tokens[i] not in tokens[:i]), 0)  # 0: one token repeated
    listener.eos_ids = {tokens[first_new]}  # pretend that token is the end of the answer
    at_eos = listener.listen(clip(), max_new_tokens=5)
    assert at_eos.tokens == tokens[:first_new] and at_eos.ended
    listener.eos_ids = set()
    decoded = [frozen.tokenizer.decode(tokens[: i + 1], skip_special_tokens=True).strip() for i in range(5)]
    frozen.answer_end = [text for text in decoded if text][-1][-2:]  # as if the template's text after {target}
    stop = next(i for i, text in enumerate(decoded) if text.endswith(frozen.answer_end))
    pieces = list(_answer_pieces(listener))
    assert listener.turn.tokens == tokens[: stop + 1] and listener.turn.ended
    assert listener.turn.text == decoded[stop][: -len(frozen.answer_end)].rstrip()
    assert "".join(pieces) == listener.turn.text  # the end is never shown, not even in part


def speak_whole_words(frozen: FrozenModel) -> None:
    """Only tokens that decode to letters can win the random LLM's greedy choice (a bias of -1e4 on the others), so
    that its answers are text whose end can be matched (a byte token alone decodes to a replacement character)."""
    head = frozen.model.lm.get_output_embeddings()
    words = [i for i in range(head.out_features) if frozen.tokenizer.decode([i]).strip().isalpha()]
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.fill_(-1e4)
        biased.bias[words] = 0.0
    frozen.model.lm.set_output_embeddings(biased)


def _answer_pieces(listener: FrozenListener) -> list[str]:
    for _ in listener.hear(clip()):
        pass
    return list(listener.answer(5))


def test_ignore_gives_no_answer_and_a_fresh_utterance(frozen: FrozenModel) -> None:
    build_state_head(frozen, state=2, at_chunk=3)
    listener = FrozenListener(frozen)
    samples = clip()
    first: list[int] = []
    for offset in range(0, len(samples), 2560):
        first += [d.state for d in listener.push(samples[offset : offset + 2560])]
        if listener.turn.outcome is not None:
            break
    turn = listener.turn
    assert first == [0, 0, 0, 2] and turn.outcome == "ignore" and not turn.tokens
    assert turn.latencies()["first_token_s"] is None and turn.latencies()["decision_s"] is not None
    with pytest.raises(ValueError, match="decided to answer"):
        next(listener.answer())
    again = listener.push(samples[: 2560 * 5])  # the next push is a new utterance, heard from its start
    assert listener.turn is not turn and [d.state for d in again] == [0, 0, 0, 2]
    heard = listener.listen(samples)
    assert heard.states == [0, 0, 0, 2] and heard.text == "" and heard.outcome == "ignore"


def test_no_decision_is_answered_at_the_end_when_asked(frozen: FrozenModel) -> None:
    with torch.no_grad():
        frozen.model.state_head.bias.copy_(torch.tensor([60.0, 0.0, 0.0]))
    forced = FrozenListener(frozen, ListenConfig(trailing_silence_s=0.16)).listen(clip(), max_new_tokens=3)
    assert forced.forced and forced.outcome == "answer" and set(forced.states) == {0} and len(forced.tokens) == 3
    assert forced.to_json()["decision_chunk"] is None
    assert forced.latencies()["decision_delay_audio_s"] == pytest.approx(0.16)
    quiet = FrozenListener(frozen, ListenConfig(answer_at_end=False)).listen(clip())
    assert quiet.outcome is None and quiet.text == "" and quiet.latencies()["decision_s"] is None


def test_without_decisions_the_whole_clip_is_heard_then_answered(frozen: FrozenModel) -> None:
    build_state_head(frozen, state=1, at_chunk=2)  # would answer at chunk 2
    turn = FrozenListener(frozen, ListenConfig(decide=False)).listen(clip(), max_new_tokens=3)
    assert set(turn.states) == {0} and len(turn.states) > 3  # every chunk heard, none decided
    assert turn.outcome == "answer" and turn.forced and len(turn.tokens) == 3


def test_target_nll_is_the_full_pass_loss_of_the_scored_tokens(frozen: FrozenModel) -> None:
    listener = FrozenListener(frozen, ListenConfig(decide=False, trailing_silence_s=0.0))
    for _ in listener.hear(clip()):
        pass
    ids = frozen.tokenizer.encode("? seven.", add_special_tokens=False)
    scored = [False] + [True] * (len(ids) - 1)  # the template's `?` is fed, the answer scored
    nll = listener.target_nll(ids, scored)
    model = frozen.model
    with torch.no_grad():
        feats = frozen.features([torch.from_numpy(clip())])[0][None]
        embeds = model.speech_embeddings(feats, torch.tensor([feats.shape[1]])).embeds
        text = model.embed_tokens(torch.tensor([ids]))
        prefix = model.embed_tokens(torch.tensor([frozen.prefix_ids]))
        inputs = torch.cat([prefix, model.prompt_embeddings()[None], embeds, text], 1)
        hidden = model.hidden_states(inputs, torch.ones(1, inputs.shape[1], dtype=torch.long))
        logp = torch.log_softmax(model.token_logits(hidden)[0].float(), -1)
    first = inputs.shape[1] - len(ids)
    expected = [-float(logp[first + i - 1, token]) for i, (token, s) in enumerate(zip(ids, scored, strict=True)) if s]
    assert nll == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    with pytest.raises(ValueError, match="one flag per token"):
        listener.target_nll(ids, [False] * len(ids))


def test_the_speech_probe_scores_transcripts_as_the_template_trains_them(folder: Path, tiny_corpus: Path) -> None:
    from benchmarks.frozen_speech_probe import probe, scored_transcripts

    frozen = load_frozen_model(folder, device="cpu")
    [(ids, scored)] = scored_transcripts(frozen, ["seven"])
    fed = scored.index(True)
    assert frozen.tokenizer.decode(ids[:fed]) == "?" and not any(scored[:fed]) and all(scored[fed:])
    assert frozen.tokenizer.decode(ids[fed:], skip_special_tokens=True) == " seven."
    result = probe(folder, tiny_corpus, "train", limit=3, seed=0)
    assert result["clips"] == 3 and result["nll_own_clip"] > 0 and result["nll_other_clip"] > 0
    assert 1 <= result["distinct_greedy_transcripts"] <= 3 and len(result["examples"]) == 3
