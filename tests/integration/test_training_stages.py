"""The three stages end to end on tiny models: files, trainable parameters, export, resume, several processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechgpt.infer.loading import load_chat_model
from speechgpt.infer.session import ChatSession, SessionConfig
from speechgpt.text.template import ChatTemplate, UserTurn
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import IGNORE
from stages import stage1_modality_adaptation, stage2_cross_modal, stage3_chain_of_modality
from tests.conftest import subprocess_env
from tests.lm_fixtures import SYSTEM, UNITS, K, make_instruct_dataset, make_tiny_lm

SPEECHGPT = [sys.executable, "-m", "speechgpt.cli"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stages")
    make_tiny_lm(root / "base")
    make_instruct_dataset(root / "d1", ["unit_lm"], count=40)
    make_instruct_dataset(root / "d2", ["asr", "tts"], count=60)
    make_instruct_dataset(root / "d3", ["com_s2s", "com_s2t", "com_t2s", "com_t2t"], count=40)
    make_instruct_dataset(root / "tts", ["tts"], count=30, seed=1)
    return root


def train_cfg(**kw) -> TrainConfig:
    base = {"max_steps": 6, "seq_len": 512, "lr": 3e-3, "warmup_steps": 1, "eval_every": 3, "save_every": 3}
    return TrainConfig(**{**base, **kw})


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_three_stages_chain_and_export(work: Path) -> None:
    s1 = stage1_modality_adaptation.run(
        stage1_modality_adaptation.Config(
            model=str(work / "base"), data=work / "d1", out=work / "s1", units_k=K, train=train_cfg()
        )
    )
    s2 = stage2_cross_modal.run(
        stage2_cross_modal.Config(model=str(s1), data=work / "d2", out=work / "s2", units_k=K, train=train_cfg())
    )
    s3 = stage3_chain_of_modality.run(
        stage3_chain_of_modality.Config(model=str(s2), data=work / "d3", out=work / "s3", units_k=K, train=train_cfg())
    )
    for out in (work / "s1", work / "s2", work / "s3"):
        records = metrics(out)
        assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
        assert any("eval/dev" in k for r in records for k in r)
        assert (out / "loss_curve.png").stat().st_size > 2000 and (out / "config.yaml").exists()
        assert sorted(p.name for p in (out / "checkpoints").glob("step*")) == ["step0000003", "step0000006"]
    model = AutoModelForCausalLM.from_pretrained(s3)
    tokenizer = AutoTokenizer.from_pretrained(s3)
    # the data's system text travels in config.json to chat sessions, which prompt with it unless told otherwise
    assert model.config.speechgpt_system == SYSTEM
    loaded = load_chat_model(s3, device="cpu")
    assert ChatSession(loaded).template.system == SYSTEM
    assert ChatSession(loaded, config=SessionConfig(system="Other.")).template.system == "Other.\n"
    assert tokenizer.convert_tokens_to_ids(UNITS.token(K - 1)) < model.get_input_embeddings().weight.shape[0]
    assert (work / "s3" / "adapter" / "adapter_config.json").exists()
    run2, run3 = (json.loads((work / s / "run.json").read_text()) for s in ("s2", "s3"))
    assert run2["steps"] == 6 and run2["params_trained"] == run2["params_total"]  # stage 2 trains everything
    assert 0 < run3["params_trained"] < run3["params_total"]  # stage 3: LoRA and the speech rows
    step_seconds = sum(r["seconds"] for r in metrics(work / "s2") if "seconds" in r)
    assert run2["train_seconds"] == round(step_seconds, 1)


def test_text_replay_keeps_the_backbone_text_in_the_mix(work: Path, caplog: pytest.LogCaptureFixture) -> None:
    from data_builders import qa_tasks
    from speechgpt.training.lm_stage import TextReplay

    qa = qa_tasks.run(qa_tasks.Config(out=work / "replay_qa", counts={"add": 12, "next_number": 8}))
    caplog.set_level("INFO")
    cfg = stage2_cross_modal.Config(
        model=str(work / "base"),
        data=work / "d2",
        out=work / "s2_replay",
        units_k=K,
        replay=TextReplay(fraction=0.5, qa=qa, qa_splits=["train", "test"]),
        train=train_cfg(max_steps=3, log_data_ids=True),
    )
    stage2_cross_modal.run(cfg)
    line = next(r.message for r in caplog.records if r.message.startswith("replay:"))
    replayed, speech = (int(w) for w in line.split() if w.isdigit())
    assert replayed > 0 and speech > 0
    trained = {
        i
        for line in (work / "s2_replay" / "data_rank0.jsonl").read_text().splitlines()
        for i in json.loads(line)["ids"]
    }
    test_ids = {json.loads(line)["id"] for line in (qa / "test.jsonl").read_text().splitlines()}
    assert any(i.startswith("replay-qa-") for i in trained)
    assert {i.split("#")[0].removeprefix("replay-qa-") for i in trained if i.startswith("replay-qa-")} & test_ids
    with pytest.raises(ValueError, match=r"replay\.qa or replay\.corpus"):
        TextReplay(fraction=0.2)

    from speechgpt.training.data import Tokenized
    from speechgpt.training.lm_stage import replay_rows

    tokenizer = AutoTokenizer.from_pretrained(work / "base")
    speech_rows = [Tokenized(f"s{i}", "asr", [1] * 100, [1] * 100) for i in range(30)]  # 3,000 trained tokens
    for forms in (["plain"], ["chat"], ["plain", "chat", "chain"]):
        rows = replay_rows(TextReplay(fraction=0.25, qa=qa, forms=forms), speech_rows, tokenizer, 512, 0, UNITS)
        text_tokens = sum(r.trained_tokens for r in rows)
        assert 1000 <= text_tokens < 1000 + max(r.trained_tokens for r in rows)  # a quarter of all trained tokens
        kinds = {r.id.split("-")[1] for r in rows}
        assert kinds == {"qa" if f == "plain" else f for f in forms}
    chain = next(r for r in rows if r.id.startswith("replay-chain-"))
    lines = [line for split in ("train", "dev", "test") for line in (qa / f"{split}.jsonl").read_text().splitlines()]
    record = {json.loads(line)["id"]: json.loads(line) for line in lines}
    question = record[chain.id.split("#")[0].removeprefix("replay-chain-")]["instruction"]
    seen = tokenizer.decode(chain.input_ids)
    trained = tokenizer.decode([t for t, label in zip(chain.input_ids, chain.labels, strict=True) if label != IGNORE])
    assert seen.count(question) == 2  # typed, then where a transcript goes
    assert "[ta]" in trained and question not in trained  # the answer after it is trained, the repeat is not


def test_the_backbone_stage_fine_tunes_a_given_lm(work: Path) -> None:
    from data_builders import qa_tasks
    from stages import stage0_text_backbone

    qa = qa_tasks.run(qa_tasks.Config(out=work / "base_qa", counts={"add": 10, "define": 4}))
    out = stage0_text_backbone.run(
        stage0_text_backbone.Config(qa=qa, base=str(work / "base"), out=work / "tuned", train=train_cfg(max_steps=2))
    )
    before, after = (AutoModelForCausalLM.from_pretrained(m) for m in (work / "base", out))
    assert before.config.hidden_size == after.config.hidden_size  # the given model, not a new tiny one
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(work / "base").get_vocab()
    changed = [not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True)]
    assert any(changed)


def test_stage3_trains_lora_and_speech_rows_only(work: Path, caplog: pytest.LogCaptureFixture) -> None:
    from peft import PeftModel

    s2 = work / "s2" / "final"
    if not s2.exists():
        stage2_cross_modal.run(
            stage2_cross_modal.Config(
                model=str(work / "base"), data=work / "d2", out=work / "s2", units_k=K, train=train_cfg()
            )
        )
    caplog.set_level("INFO")
    stage3_chain_of_modality.run(
        stage3_chain_of_modality.Config(
            model=str(s2), data=work / "d3", out=work / "s3b", units_k=K, train=train_cfg(max_steps=2)
        )
    )
    base = AutoModelForCausalLM.from_pretrained(s2)
    hidden, layers = base.config.hidden_size, base.config.num_hidden_layers
    lora = layers * 2 * 8 * (hidden + hidden)  # q and v, r=8: A (r x in) + B (out x r)
    new_tokens = K + 8  # units + template markers, one embedding row each (tied embeddings)
    expected = lora + new_tokens * hidden
    assert f"trainable parameters: {expected} of" in caplog.text
    adapted = PeftModel.from_pretrained(base, work / "s3b" / "adapter")
    assert sum(p.numel() for n, p in adapted.named_parameters() if "lora_" in n) == lora


def max_change(before: dict, after: dict, key: str, rows: slice) -> float:
    return (after[key][rows] - before[key][rows]).abs().max().item()


def test_speech_token_rows_train_at_their_own_rate(work: Path) -> None:
    """Adam's first step moves every element with a gradient by its learning rate: the speech rows by
    speech_token_lr, everything else by train.lr; a split run resumes, and LoRA's trainable tokens take the rate too."""
    s1 = stage1_modality_adaptation.run(
        stage1_modality_adaptation.Config(
            model=str(work / "base"), data=work / "d1", out=work / "rate_s1", units_k=K, train=train_cfg(max_steps=1)
        )
    )
    assert all("lr_groups" not in r for r in metrics(work / "rate_s1"))  # one optimizer group: `lr` alone
    slow, fast = 1e-6, 1e-2
    rates = {"lr": slow, "warmup_steps": 0, "schedule": "constant", "eval_every": 0, "save_every": 1}

    def stage2(steps: int) -> Path:
        return stage2_cross_modal.Config(
            model=str(s1), data=work / "d2", out=work / "rate_s2", units_k=K, speech_token_lr=fast,
            train=train_cfg(max_steps=steps, **rates),
        )  # fmt: skip

    first_unit = AutoTokenizer.from_pretrained(s1).convert_tokens_to_ids(UNITS.token(0))
    before = AutoModelForCausalLM.from_pretrained(s1).state_dict()
    s2 = stage2_cross_modal.run(stage2(1))
    after = AutoModelForCausalLM.from_pretrained(s2).state_dict()
    embedding = "model.embed_tokens.weight"
    assert fast / 2 < max_change(before, after, embedding, slice(first_unit, None)) <= fast * 1.001
    assert 0 < max_change(before, after, embedding, slice(0, first_unit)) <= slow * 1.001
    layer = "model.layers.0.mlp.up_proj.weight"
    assert 0 < max_change(before, after, layer, slice(None)) <= slow * 1.001
    stage2_cross_modal.run(stage2(2))  # resumes from the split run's step-1 checkpoint
    steps = [r for r in metrics(work / "rate_s2") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["lr_groups"] == [slow, fast] for r in steps)
    s3 = stage3_chain_of_modality.run(
        stage3_chain_of_modality.Config(
            model=str(s2), data=work / "d3", out=work / "rate_s3", units_k=K, speech_token_lr=fast,
            train=train_cfg(max_steps=1, **rates),
        )
    )  # fmt: skip
    merged = AutoModelForCausalLM.from_pretrained(s3).state_dict()
    after2 = AutoModelForCausalLM.from_pretrained(work / "rate_s2" / "final").state_dict()
    assert fast / 2 < max_change(after2, merged, embedding, slice(first_unit, None)) <= fast * 1.001
    assert max_change(after2, merged, embedding, slice(0, first_unit)) == 0


def test_exported_model_generates_unit_tokens(work: Path) -> None:
    out = stage2_cross_modal.run(
        stage2_cross_modal.Config(
            model=str(work / "base"),
            data=work / "tts",
            out=work / "tts_run",
            units_k=K,
            train=train_cfg(max_steps=40, eval_every=0, save_every=0, lr=5e-3),
        )
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = ChatTemplate(UNITS, system="You are a speech assistant.\n").prompt(
        [], UserTurn(instruction="Say it.", text="two plus two")
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    generated = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :]
    unit_ids = set(tokenizer.convert_tokens_to_ids(UNITS.tokens()))
    tokens = tokenizer.convert_ids_to_tokens(generated)
    start = tokens.index("<sosp>")  # a random model would almost never open a unit span first
    assert start <= 1 and int(generated[start + 1]) in unit_ids, tokenizer.decode(generated)


def test_killed_run_resumes_with_identical_losses(work: Path) -> None:
    args = [
        *SPEECHGPT,
        "train",
        "stage2",
        f"model={work / 'base'}",
        f"data={work / 'd2'}",
        f"units_k={K}",
        "train.max_steps=24",
        "train.save_every=4",
        "train.eval_every=0",
        "train.seq_len=512",
        "train.lr=3e-3",
    ]
    straight = work / "straight"
    subprocess.run([*args, f"out={straight}"], check=True, capture_output=True, env=subprocess_env())
    killed = work / "killed"
    proc = subprocess.Popen(
        [*args, f"out={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=subprocess_env(),
    )
    deadline = time.time() + 240
    while time.time() < deadline and not (killed / "checkpoints" / "step0000008").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the run should have been stopped part-way"
    subprocess.run([*args, f"out={killed}"], check=True, capture_output=True, env=subprocess_env())
    want = {r["step"]: r["loss"] for r in metrics(straight) if "loss" in r}
    got = {r["step"]: r["loss"] for r in metrics(killed) if "loss" in r}  # later lines (after resume) win
    assert sorted(got) == list(range(1, 25))
    for step in range(1, 25):
        assert abs(got[step] - want[step]) < 1e-5, (step, got[step], want[step])
    a = AutoModelForCausalLM.from_pretrained(straight / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(killed / "final").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("zero", [2, 3])
def test_two_processes_split_the_data_and_learn(work: Path, zero: int) -> None:
    out = work / f"zero{zero}"
    result = subprocess.run(
        [
            *SPEECHGPT,
            "train",
            "stage2",
            "--nproc",
            "2",
            f"model={work / 'base'}",
            f"data={work / 'd2'}",
            f"out={out}",
            f"units_k={K}",
            f"train.zero_stage={zero}",
            "train.max_steps=10",
            "train.eval_every=0",
            "train.save_every=0",
            "train.seq_len=256",
            "train.lr=3e-3",
            "train.log_data_ids=true",
            *(["speech_token_lr=1e-2"] if zero == 2 else []),  # split rows in their own group, partitioned by ZeRO-2
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [
        [json.loads(line)["ids"] for line in (out / f"data_rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    ]
    for step_ids_0, step_ids_1 in zip(*ranks, strict=True):
        assert step_ids_0 and step_ids_1 and not set(step_ids_0) & set(step_ids_1)
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert AutoModelForCausalLM.from_pretrained(out / "final") is not None


def test_text_backbone_trains_and_exports(work: Path) -> None:
    from data_builders import qa_tasks
    from stages import stage0_text_backbone

    qa = qa_tasks.run(qa_tasks.Config(out=work / "qa", counts={"add": 30, "next_number": 20, "define": 10}))
    out = stage0_text_backbone.run(
        stage0_text_backbone.Config(
            qa=qa,
            out=work / "backbone",
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            vocab_size=300,
            qa_splits=["train", "dev"],
            train=train_cfg(max_steps=4, eval_every=2, save_every=2, log_data_ids=True),
        )
    )
    records = metrics(work / "backbone")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert any("eval/heldout/text/loss" in r for r in records)  # the test questions, never trained
    trained = {
        i for line in (work / "backbone" / "data_rank0.jsonl").read_text().splitlines() for i in json.loads(line)["ids"]
    }
    dev_ids = {f"qa-{json.loads(line)['id']}" for line in (qa / "dev.jsonl").read_text().splitlines()}
    test_ids = {f"qa-{json.loads(line)['id']}" for line in (qa / "test.jsonl").read_text().splitlines()}
    assert dev_ids & trained and not test_ids & trained
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache and model.config._attn_implementation == "sdpa"
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<s>") is not None
