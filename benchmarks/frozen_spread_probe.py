"""Can the frozen backbone read a question whose words are spread out in time, as speech embeddings are?

    .venv/bin/python -m benchmarks.frozen_spread_probe            # the demo's backbone and test questions

Each test question's exact token embeddings are fed (after BOS, then the `?` the backbone learned after questions)
laid out four ways: as text; each embedding repeated k times; each followed by k - 1 zero vectors; each followed by
k - 1 copies of the mean token embedding. The backbone's greedy answer is judged as S2T is judged. A frame-rate
adapter (12.5 embeddings a second, ~4 a word) can at best give the LLM a spread-out question; when the backbone
cannot read one even from its own embeddings, the adapter has to give it one input per word (word_pooling).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

LAYOUTS = (("text", 1), ("repeat", 2), ("repeat", 4), ("zeros", 2), ("zeros", 4), ("mean", 4))


def laid_out(table: torch.Tensor, ids: list[int], layout: str, k: int) -> torch.Tensor:
    parts = [table[ids[:1]]]
    for token in ids[1:]:
        one = table[[token]]
        if layout == "repeat":
            parts.append(one.repeat(k, 1))
        elif layout == "zeros":
            parts += [one, torch.zeros(k - 1, table.shape[1])]
        elif layout == "mean":
            parts += [one, table.mean(0, keepdim=True).repeat(k - 1, 1)]
        else:
            parts.append(one)
    return torch.cat(parts)


def greedy(lm: Any, tokenizer: Any, embeds: torch.Tensor, max_tokens: int = 16) -> str:
    table = lm.get_input_embeddings().weight
    out: list[int] = []
    for _ in range(max_tokens):
        token = int(lm(inputs_embeds=embeds[None]).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
        embeds = torch.cat([embeds, table[[token]]])
    return tokenizer.decode(out).split(".")[0].strip()


@torch.no_grad()
def probe(backbone: Path, qa: Path, split: str) -> dict[str, Any]:
    from speechgpt.eval.answers import answer_is_correct
    from speechgpt.model.load import load_lm

    lm, tokenizer = load_lm(backbone, dtype="float32")
    table = lm.get_input_embeddings().weight
    records = [json.loads(line) for line in (qa / f"{split}.jsonl").read_text().splitlines() if line]
    question_mark = tokenizer("?", add_special_tokens=False)["input_ids"]
    result: dict[str, Any] = {"backbone": str(backbone), "questions": len(records)}
    for layout, k in LAYOUTS:
        right = 0
        for record in records:
            ids = [tokenizer.bos_token_id] + tokenizer(record["instruction"], add_special_tokens=False)["input_ids"]
            embeds = torch.cat([laid_out(table, ids, layout, k), table[question_mark]])
            right += answer_is_correct(record.get("family", ""), record["output"], greedy(lm, tokenizer, embeds))
        result[f"{layout} x{k}"] = right
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", type=Path, default=Path("out/demo/backbone/final"))
    parser.add_argument("--qa", type=Path, default=Path("out/demo/qa"))
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(json.dumps(probe(args.backbone, args.qa, args.split), indent=1))


if __name__ == "__main__":
    main()
