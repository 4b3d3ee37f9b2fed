"""The frozen-LLM variant's three input stages end to end on a corpus spoken by real TTS voices and a tiny LLM: the
files each writes, the meta a loader rebuilds the model from, which parameters train (and that the optimizer holds
only those), named loss parts in metrics.jsonl, resume that continues with the losses of an uninterrupted run and
reuses the cached features, bad clips skipped and counted, the LLM's weights fingerprint unchanged (and a changed
LLM refused), state labels, answers from the backbone, and a Llama -> Qwen2 backbone swap."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from data_builders import synth_corpus
from speechgpt.data.corpus import load_corpus, write_corpus_dataset
from speechgpt.model.frozen_checkpoint import load_speech_encoder, load_speech_modules, read_speech_meta
from speechgpt.model.frozen_lm import weights_fingerprint
from speechgpt.model.load import load_lm
from speechgpt.model.state_labels import ANSWER, IGNORE_SPEECH, KEEP_LISTENING
from speechgpt.model.tiny import build_tiny_lm
from speechgpt.training import frozen_stage
from speechgpt.training.checkpoint import safe_load
from speechgpt.training.config import TrainConfig
from speechgpt.training.feature_cache import FeatureSettings
from speechgpt.training.frozen_stage import EncoderSettings, SpeechTemplate
from speechgpt.training.spoken_qa_data import generate_answer
from stages import frozen_asr, frozen_ctc, frozen_qa
from tests.conftest import REPO, TWO_VOICES
from tests.integration.test_build_stage3 import write_questions
from tests.lm_fixtures import make_tiny_lm

QUESTIONS = {
    "train": [
        {"id": "add-3-4", "instruction": "what is three plus four", "output": "seven"},
        {"id": "after-12", "instruction": "what number comes after twelve", "output": "thirteen"},
        {"id": "letters-cat", "instruction": "how many letters are in the word cat", "output": "three"},
    ],
    "dev": [{"id": "sub-9-2", "instruction": "what is nine minus two", "output": "seven"}],
    "test": [{"id": "add-5-1", "instruction": "what is five plus one", "output": "six"}],
}
META_KEYS = {
    "frozen-ctc": {"variant", "stage", "encoder", "features", "cmvn", "ctc_vocab", "trainable", "trainable_parameters"}
    | {"init"},
    "frozen-asr": {"variant", "stage", "encoder", "adapter", "num_prompts", "lm_fingerprint", "backbone", "features"}
    | {"cmvn", "ctc_vocab", "template", "trainable", "trainable_parameters", "init"},
}
META_KEYS["frozen-qa"] = META_KEYS["frozen-asr"] | {"answers", "states", "trailing_silence_s"}


def train_cfg(**kw: Any) -> TrainConfig:
    base = dict(max_steps=4, micro_batch=4, lr=2e-3, warmup_steps=0, schedule="constant", eval_every=4, save_every=2)
    return TrainConfig(**{**base, **kw})


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def step_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(out) if "loss" in r}


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frozen")


@pytest.fixture(scope="module")
def corpus(tiny_corpus: Path, root: Path) -> Path:
    """The tiny corpus (4 sentences by 2 voices, one held out as split test) plus an unreadable clip and a clip
    with an empty transcript, both in train."""
    rows = load_corpus(tiny_corpus).to_list()
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    good = next(r for r in rows if r["split"] == "train")
    rows.append({**good, "id": "zz-broken", "audio": str(broken)})
    rows.append({**good, "id": "zz-silent-text", "text": ""})
    return write_corpus_dataset(rows, root / "corpus" / "dataset").parent


@pytest.fixture(scope="module")
def qa(root: Path) -> tuple[Path, Path]:
    """(QA folder, its spoken questions): train questions by the training voice, dev/test by the held-out one."""
    questions = write_questions(root / "qa", QUESTIONS)
    cfg = synth_corpus.Config(
        out=root / "qa_speech", qa=questions, voices=TWO_VOICES, heldout_voices=[TWO_VOICES[1]], num_workers=2
    )
    return questions, synth_corpus.run(cfg)


@pytest.fixture(scope="module")
def llama(root: Path) -> Path:
    return make_tiny_lm(root / "llama", "llama")


def ctc_config(corpus: Path, out: Path, **train: Any) -> frozen_ctc.Config:
    return frozen_ctc.Config(
        corpus=corpus,
        out=out,
        features=FeatureSettings(num_mel_bins=40),
        encoder=EncoderSettings(dim=32, num_layers=2, num_heads=4, left_chunks=2),
        train=train_cfg(eval_splits=["test"], **train),
    )


def asr_config(init: Path, backbone: Path, corpus: Path, out: Path, **train: Any) -> frozen_asr.Config:
    return frozen_asr.Config(
        init=init,
        backbone=str(backbone),
        corpus=corpus,
        out=out,
        num_prompts=3,
        train=train_cfg(**{"eval_splits": ["test"], **train}),
    )


def qa_config(init: Path, qa: tuple[Path, Path], corpus: Path, out: Path, **kw: Any) -> frozen_qa.Config:
    train = train_cfg(eval_splits=["dev"], **kw.pop("train", {}))
    return frozen_qa.Config(
        init=init, qa=qa[0], qa_speech=qa[1], ignore_corpus=corpus, out=out, noise_clips=4, train=train, **kw
    )


@pytest.fixture(scope="module")
def ctc(corpus: Path, root: Path) -> Path:
    return frozen_ctc.run(ctc_config(corpus, root / "ctc"))


@pytest.fixture(scope="module")
def asr(ctc: Path, llama: Path, corpus: Path, root: Path) -> Path:
    return frozen_asr.run(asr_config(ctc, llama, corpus, root / "asr"))


@pytest.fixture(scope="module")
def qa_run(asr: Path, qa: tuple[Path, Path], corpus: Path, root: Path) -> Path:
    return frozen_qa.run(qa_config(asr, qa, corpus, root / "qa_run"))


def optimizer_numel(out: Path, step: int) -> int:
    """Elements of the Adam moments in the step's DeepSpeed checkpoint: what the optimizer holds state for."""
    state = safe_load(out / "checkpoints" / f"step{step:07d}" / "mp_rank_00_model_states.pt")
    moments = state["optimizer"]["state"].values()
    return sum(m["exp_avg"].numel() for m in moments)


def check_resume(stage: Any, cfg: Any, straight: Path) -> None:
    """A run stopped after 2 steps and run again to 4 continues with the losses of the 4-step run, and computes no
    feature again."""
    first = replace(cfg, train=replace(cfg.train, max_steps=2))
    stage.run(first)
    shards = sorted((cfg.out / "features").rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    stage.run(cfg)
    assert shards and [p.stat().st_mtime_ns for p in shards] == stamps
    resumed, whole = step_losses(cfg.out), step_losses(straight)
    assert sorted(resumed) == [1, 2, 3, 4]
    assert [resumed[s] for s in (3, 4)] == pytest.approx([whole[s] for s in (3, 4)], abs=1e-5)


def test_ctc_trains_the_encoder_alone_skips_bad_clips_and_resumes(ctc: Path, corpus: Path, root: Path) -> None:
    out = ctc.parent
    meta = read_speech_meta(ctc)
    assert set(meta) == META_KEYS["frozen-ctc"] and meta["stage"] == "frozen-ctc" and meta["variant"] == "frozen"
    assert meta["features"]["kind"] == "fbank" and meta["features"]["dim"] == 40 and len(meta["cmvn"]["mean"]) == 40
    assert meta["ctc_vocab"][0] == "<blank>" and "c" in meta["ctc_vocab"]
    encoder = load_speech_encoder(ctc)  # rebuilt from the folder alone, CMVN included
    assert meta["trainable_parameters"] == numel(encoder) == optimizer_numel(out, 4)
    assert encoder.cmvn_mean.tolist() == pytest.approx(meta["cmvn"]["mean"])
    assert json.loads((out / "skipped.json").read_text()) == {"train": {"empty text": 1, "unreadable audio": 1}}
    steps = [r for r in records(out) if "loss" in r]
    assert all(r["loss/ctc"] == r["loss"] and r["frames"] > 0 for r in steps)
    assert "eval/test/asr/ctc" in records(out)[-1]
    assert (out / "config.yaml").exists() and (out / "loss_curve.png").exists()
    check_resume(frozen_ctc, ctc_config(corpus, root / "ctc_resumed"), out)


def test_a_copied_output_tree_keeps_the_backbone_its_meta_names(asr: Path, llama: Path, root: Path, tmp_path: Path):
    import shutil

    stored = json.loads((asr / "speech_modules.json").read_text())
    assert set(stored["relative_paths"]) == {"backbone", "init"}
    assert not any(Path(p).is_absolute() for p in stored["relative_paths"].values())
    copy = tmp_path / "copy"
    for folder in (llama, asr):
        shutil.copytree(folder, copy / folder.relative_to(root))
    meta = read_speech_meta(copy / asr.relative_to(root))
    assert meta["backbone"] == str(copy / llama.relative_to(root))
    assert load_speech_modules(load_lm(meta["backbone"])[0], copy / asr.relative_to(root)) is not None
    alone = tmp_path / "alone"  # copied without its tree: the backbone it trained with
    shutil.copytree(asr, alone)
    assert read_speech_meta(alone)["backbone"] == str(llama.resolve())


def test_asr_trains_only_the_speech_modules_and_leaves_the_llm_unchanged(
    asr: Path, ctc: Path, llama: Path, corpus: Path, root: Path
) -> None:
    out = asr.parent
    meta = read_speech_meta(asr)
    assert set(meta) == META_KEYS["frozen-asr"] and meta["stage"] == "frozen-asr"
    assert meta["backbone"] == str(llama.resolve()) and meta["init"] == str(ctc.resolve())
    assert meta["template"] == {"text": "{speech}{target}", "eos": False}
    lm, _ = load_lm(meta["backbone"])
    assert meta["lm_fingerprint"] == weights_fingerprint(lm)
    model = load_speech_modules(lm, asr)  # the folder and the LLM are all a loader needs
    ctc_head = numel(model.encoder.ctc_head)
    expected = numel(model.encoder) - ctc_head + numel(model.adapter) + numel(model.prompt)
    assert meta["trainable"] == ["encoder", "adapter", "prompt"]
    assert meta["trainable_parameters"] == expected == optimizer_numel(out, 4)
    before = load_speech_encoder(ctc)
    assert torch.equal(model.encoder.ctc_head.weight, before.ctc_head.weight)  # kept as stage 1 left it
    assert not torch.equal(model.encoder.layers[0].ffn[0].weight, before.layers[0].ffn[0].weight)
    steps = [r for r in records(out) if "loss" in r]
    assert all(r["loss/lm"] == r["loss"] for r in steps)
    assert {"eval/test/asr/lm", "eval/test/asr/ppl"} <= set(records(out)[-1])
    check_resume(frozen_asr, asr_config(ctc, llama, corpus, root / "asr_resumed"), out)


def test_asr_under_zero3_checks_and_exports_gathered_weights(
    asr: Path, ctc: Path, llama: Path, corpus: Path, root: Path
) -> None:
    """ZeRO-3 partitions the frozen LLM too: the same losses as without it, and the fingerprint check and the export
    see whole weights (those of the unpartitioned run at the same step)."""
    zero3 = str(REPO / "configs" / "deepspeed" / "zero3.json")
    cfg = asr_config(ctc, llama, corpus, root / "asr_zero3", max_steps=2, zero_stage=3, deepspeed_config=zero3)
    final = frozen_asr.run(cfg)
    whole = step_losses(asr.parent)
    assert list(step_losses(cfg.out).values()) == pytest.approx([whole[1], whole[2]], abs=1e-5)
    assert read_speech_meta(final)["lm_fingerprint"] == read_speech_meta(asr)["lm_fingerprint"]
    exported = load_speech_modules(load_lm(llama)[0], final).state_dict()
    unpartitioned = safe_load(asr.parent / "checkpoints" / "step0000002" / "mp_rank_00_model_states.pt")["module"]
    for key in ("adapter.project.weight", "prompt.weight", "encoder.layers.0.qkv.weight"):
        assert torch.allclose(exported[key], unpartitioned[key], atol=1e-6), key


def test_a_changed_llm_is_refused_at_export(ctc: Path, llama: Path, corpus: Path, root: Path, monkeypatch) -> None:
    unfreeze = frozen_stage.set_trainable

    def also_the_llm(model: Any, names: Any) -> int:
        count = unfreeze(model, names)
        model.lm.requires_grad_(True)  # what a bug in a stage could do
        return count

    monkeypatch.setattr(frozen_asr, "set_trainable", also_the_llm)
    out = root / "asr_unfrozen"
    with pytest.raises(RuntimeError, match="frozen LLM's weights changed"):
        frozen_asr.run(asr_config(ctc, llama, corpus, out, max_steps=1, eval_every=0))
    assert not (out / "final").exists()


def test_backbone_swap_llama_to_qwen2(ctc: Path, corpus: Path, root: Path, llama: Path) -> None:
    _, tokenizer = load_lm(llama)
    qwen = build_tiny_lm("qwen2", tokenizer, hidden_size=48, num_layers=2, num_heads=4, seed=3)
    qwen.save_pretrained(root / "qwen2")
    tokenizer.save_pretrained(root / "qwen2")
    final = frozen_asr.run(asr_config(ctc, root / "qwen2", corpus, root / "asr_qwen2", max_steps=2, eval_every=0))
    meta = read_speech_meta(final)
    lm, _ = load_lm(root / "qwen2")
    assert lm.config.model_type == "qwen2" and meta["lm_fingerprint"] == weights_fingerprint(lm)
    model = load_speech_modules(lm, final)
    assert model.adapter.project.out_features == 48 and model.prompt.weight.shape == (3, 48)
    assert model.state_head.in_features == 48
    with pytest.raises(ValueError, match="another LLM"):
        load_speech_modules(load_lm(llama)[0], final)


def test_qa_trains_prompt_and_state_head_on_questions_and_speech_to_ignore(
    qa_run: Path, asr: Path, qa: tuple[Path, Path], corpus: Path, root: Path
) -> None:
    out = qa_run.parent
    meta = read_speech_meta(qa_run)
    assert set(meta) == META_KEYS["frozen-qa"] and meta["answers"] == "dataset"
    assert meta["states"] == ["keep_listening", "answer", "ignore"]
    lm, _ = load_lm(meta["backbone"])
    assert meta["lm_fingerprint"] == weights_fingerprint(lm) == read_speech_meta(asr)["lm_fingerprint"]
    model, start = load_speech_modules(lm, qa_run), load_speech_modules(lm, asr)
    assert meta["trainable_parameters"] == numel(model.prompt) + numel(model.state_head) == optimizer_numel(out, 4)
    assert torch.equal(model.adapter.project.weight, start.adapter.project.weight)
    assert not torch.equal(model.prompt.weight, start.prompt.weight)
    frozen_stage.set_trainable(model, meta["trainable"])
    model.train()  # modules a stage keeps frozen stay in eval mode (no dropout), as the LLM does
    assert model.state_head.training and not model.encoder.training and not model.lm.training
    steps = [r for r in records(out) if "loss" in r]
    assert all(r["loss"] == pytest.approx(r["loss/lm"] + r["loss/state"], rel=1e-5) for r in steps)
    evals = records(out)[-1]
    assert {"eval/dev/question/lm", "eval/dev/question/state", "eval/dev/noise/state"} <= set(evals)
    assert json.loads((out / "skipped.json").read_text()) == {"train": {"empty text": 1, "unreadable audio": 1}}
    check_resume(frozen_qa, qa_config(asr, qa, corpus, root / "qa_resumed"), out)


def test_state_labels_of_a_question_a_sentence_and_noise(qa_run: Path) -> None:
    lm, tokenizer = load_lm(read_speech_meta(qa_run)["backbone"])
    model = load_speech_modules(lm, qa_run)
    template = SpeechTemplate("{speech}? {target}.")
    frames = 100 * 2  # 2 s of fbank frames = 50 encoder frames = 13 chunks of 160 ms

    class Ends:
        speech_end_s: ClassVar = {"q": 1.2, "s": 1.2}

    labels = {}
    for clip, group, answer in (("q", "question", "seven"), ("s", "ignore", None), ("n", "noise", None)):
        row = {"id": clip, "group": group, "text": "what is three plus four", "answer": answer}
        labels[group] = frozen_qa.clip_targets(row, frames, model, template, tokenizer, Ends)
    # speech ends at 1.2 s: chunks ending by 1.36 s listen (0.16 s of silence is heard at the end of chunk 8)
    want = [KEEP_LISTENING] * 8
    assert labels["question"]["state_labels"] == want + [ANSWER] * 5
    assert labels["ignore"]["state_labels"] == want + [IGNORE_SPEECH] * 5
    assert labels["noise"]["state_labels"] == [IGNORE_SPEECH] * 13
    assert labels["ignore"]["text_ids"] == [] and labels["noise"]["labels"] == []
    q = labels["question"]
    trained = [t for t, label in zip(q["text_ids"], q["labels"], strict=True) if label != -100]
    assert tokenizer.decode(trained) == " seven." and tokenizer.decode(q["text_ids"]) == "? seven."
    fed = template.answer_prefix_ids(tokenizer)  # what listening feeds after the speech, whatever the answer
    assert tokenizer.decode(fed) == "?" and q["text_ids"][: len(fed)] == fed and q["labels"][: len(fed)] == [-100]


def test_qa_with_answers_from_the_backbone(asr: Path, qa: tuple[Path, Path], corpus: Path, root: Path) -> None:
    cfg = qa_config(
        asr, qa, corpus, root / "qa_backbone", answers="backbone", max_answer_tokens=3, train={"max_steps": 1}
    )
    final = frozen_qa.run(cfg)
    assert read_speech_meta(final)["answers"] == "backbone"
    stored = json.loads((cfg.out / "backbone_answers.json").read_text())
    assert sorted(stored["asked"]) == ["add-3-4", "after-12", "letters-cat", "sub-9-2"]  # train and dev questions
    lm, tokenizer = load_lm(read_speech_meta(final)["backbone"])
    template = SpeechTemplate(cfg.template)
    questions = {q["id"]: q["instruction"] for split in ("train", "dev") for q in QUESTIONS[split]}
    for rid, answer in stored["answers"].items():
        assert answer == generate_answer(lm, tokenizer, template, questions[rid], 3)


def test_word_reading_adapter_and_distillation(
    ctc: Path, llama: Path, qa: tuple[Path, Path], corpus: Path, root: Path
) -> None:
    """frozen-asr with `pool_words` trains an adapter that reads one vector per word (with the word-token loss),
    frozen-qa continues it with cross-modal distillation, the export says so, and listening loads and streams it."""
    from speechgpt.data.audio import read_audio
    from speechgpt.infer.frozen_loading import load_frozen_model
    from speechgpt.infer.listening import FrozenListener

    asr_cfg = replace(asr_config(ctc, llama, corpus, root / "asr_words", max_steps=2), pool_words=True, align_weight=1)
    words = frozen_asr.run(asr_cfg)
    meta = read_speech_meta(words)
    vocab = read_speech_meta(ctc)["ctc_vocab"]
    assert meta["adapter"] == {"kernel_size": 1, "stride": 1, "word_space": vocab.index(" "), "word_pause": 4}
    assert all("loss/align" in r for r in records(asr_cfg.out) if "loss" in r)
    qa_cfg = qa_config(words, qa, corpus, root / "qa_distill", distill_weight=1.0, train={"max_steps": 2})
    final = frozen_qa.run(qa_cfg)
    assert [r["loss/distill"] > 0 for r in records(qa_cfg.out) if "loss" in r] == [True, True]
    assert load_speech_modules(load_lm(llama)[0], final).word_space == vocab.index(" ")
    listener = FrozenListener(load_frozen_model(final, device="cpu"))
    heard = load_corpus(corpus).filter(lambda row: row["split"] == "test")[0]["audio"]
    turn = listener.listen(read_audio(heard).samples, max_new_tokens=3)
    assert turn.decisions and listener._words is not None and listener._words.labels
