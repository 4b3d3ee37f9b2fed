"""The backbone's plain text, written once for stage 0 (which trains on it) and `speechgpt eval text` (which asks it
back): a QA pair of `speechgpt build qa` as one `question? answer.` line, and a corpus' sentences split into the
trained ones (its train split) and the held-out ones (its other splits' sentences that no train clip also says).

    question, answer = qa_text(record)       # ("what is three plus five", "eight")
    qa_line(record)                          # "what is three plus five? eight."
    qa_prompt(question)                      # "what is three plus five?": the line up to the answer
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ANSWER_END = "."
"""What closes the answer of a QA line (then EOS): a continuation of `qa_prompt` is the answer up to it."""
QA_KEYS = ("id", "instruction", "output")
"""Keys every record of a QA split must have (`input` is optional)."""


def qa_question(record: dict[str, Any]) -> str:
    """The question of a QA record: the instruction, then the input when there is one."""
    return " ".join([record["instruction"], record.get("input") or ""]).strip()


def qa_text(record: dict[str, Any]) -> tuple[str, str]:
    """(question, answer) of a `speechgpt build qa` record."""
    return qa_question(record), record["output"]


def qa_prompt(question: str) -> str:
    """The QA line up to its answer: what the backbone is asked."""
    return f"{question}?"


def qa_line(record: dict[str, Any]) -> str:
    """The `question? answer.` line stage 0 trains on (closed by EOS there)."""
    question, answer = qa_text(record)
    return f"{qa_prompt(question)} {answer}{ANSWER_END}"


def load_qa_split(qa: Path, split: str, keys: tuple[str, ...] = QA_KEYS) -> list[dict[str, Any]]:
    """The records of `<qa>/<split>.jsonl` (`read_qa_records`)."""
    path = qa / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `speechgpt build qa` first")
    return read_qa_records(path, keys)


def read_qa_records(path: Path, keys: tuple[str, ...] = QA_KEYS) -> list[dict[str, Any]]:
    """The records of a QA JSONL file in file order, each with `keys`; blank lines are skipped, a bad line is an
    error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err})") from None
        missing = [k for k in keys if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(f"{path}:{number}: a QA record needs {', '.join(missing)}")
        records.append(record)
    return records


def corpus_sentences(corpus: Path, trained: bool) -> list[str]:
    """The distinct transcripts of a corpus, sorted: those of its train split (`trained`), or the other splits' ones
    that are not also train transcripts (the held-out text: never trained by stage 0)."""
    from speechgpt.data.corpus import load_corpus

    dataset = load_corpus(corpus)
    pairs = list(zip(dataset["text"], dataset["split"], strict=True))
    train = {t for t, s in pairs if s == "train"}
    return sorted(train) if trained else sorted({t for t, s in pairs if s != "train"} - train)


def text_row(row_id: str, text: str, eos: str) -> dict[str, Any]:
    """A text row trained whole and closed by EOS, as a pretrained LLM ends its texts (the frozen variant's stages
    rely on it to end a transcript or an answer); `speechgpt.training.data.tokenize_rows` puts BOS before it."""
    text = text + eos
    return {"id": row_id, "task": "text", "text": text, "loss_spans": [[0, len(text)]]}


def qa_rows(records: list[dict[str, Any]], eos: str, prefix: str = "qa") -> list[dict[str, Any]]:
    """One `question? answer.` text row per record, closed by `eos`, id `<prefix>-<record id>`."""
    return [text_row(f"{prefix}-{r['id']}", qa_line(r), eos) for r in records]


ECHO = " -> "
"""What stands between a sentence and its repetition in an echo line (stage 0's `echo_lines`)."""


def echo_rows(sentences: list[str], eos: str) -> list[dict[str, Any]]:
    """One `sentence -> sentence` row per sentence, closed by `eos`, id `echo-<index>`."""
    return [text_row(f"echo-{i:05d}", f"{sentence}{ECHO}{sentence}", eos) for i, sentence in enumerate(sentences)]


def sentence_rows(sentences: list[str], eos: str, prefix: str) -> list[dict[str, Any]]:
    """One text row per sentence, closed by `eos`, id `<prefix>-<index>`."""
    return [text_row(f"{prefix}-{i:05d}", sentence, eos) for i, sentence in enumerate(sentences)]
