"""Does the unified model know how to say an answer? Teacher-forced up to the answer's `<sosp>`, it writes the units.

    .venv/bin/python -m benchmarks.answer_units                             # the demo's stage-3 model, test split
    .venv/bin/python -m benchmarks.answer_units --split train --limit 60 --beams 1

Each stage-3 example that ends in speech (`com_t2s` unless `--task` says otherwise) is fed through `<sosp>`: the
question, the transcript where there is one, and the right text answer. The model then writes units until `<eosp>`,
greedily and by beam search. Printed per example and in total: how often it writes the reference exactly, the share
of units in place (position by position, over the reference's length), and how often the reference sequence is
likelier than greedy's own output. When greedy is wrong but the reference is likelier, a wider search would help;
when the reference is less likely, the model has not learned the answer's units.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

SOSP, EOSP = "<sosp>", "<eosp>"


def answer_prompts(rows: list[dict[str, Any]], tokenizer: Any) -> list[tuple[str, list[int], list[int]]]:
    """(id, token ids through the answer's `<sosp>`, the reference units' ids with `<eosp>`) of each row."""
    eosp = tokenizer.convert_tokens_to_ids(EOSP)
    prompts = []
    for row in rows:
        head, sep, tail = row["text"].rpartition(SOSP)
        if not sep or EOSP not in tail:
            raise ValueError(f"example {row['id']}: no spoken answer (<sosp> ... <eosp>) in its text")
        prefix = tokenizer(head + SOSP, add_special_tokens=False)["input_ids"]
        units = tokenizer(tail.split(EOSP)[0], add_special_tokens=False)["input_ids"]
        prompts.append((row["id"], prefix, [*units, eosp]))
    return prompts


@torch.inference_mode()
def sequence_logprob(model: Any, prefix: list[int], continuation: list[int]) -> float:
    """log p(continuation | prefix) under the model."""
    logits = model(torch.tensor([prefix + continuation])).logits[0, len(prefix) - 1 : -1]
    picked = logits.log_softmax(-1).gather(1, torch.tensor(continuation)[:, None])
    return float(picked.sum())


@torch.inference_mode()
def write_units(model: Any, prefix: list[int], eosp: int, beams: int, max_new_tokens: int) -> list[int]:
    """What the model writes after `prefix` until `<eosp>` (included), greedy or by beam search."""
    out = model.generate(
        torch.tensor([prefix]),
        max_new_tokens=max_new_tokens,
        num_beams=beams,
        do_sample=False,
        eos_token_id=eosp,
        pad_token_id=eosp,
    )
    return out[0, len(prefix) :].tolist()


def units_in_place(written: list[int], reference: list[int]) -> float:
    """Share of the reference's positions where the written sequence has the same token."""
    return sum(a == b for a, b in zip(written, reference, strict=False)) / len(reference)


def probe(model: Any, tokenizer: Any, rows: list[dict[str, Any]], beams: int) -> dict[str, Any]:
    """Per-example results and their means (see the module docstring)."""
    eosp = tokenizer.convert_tokens_to_ids(EOSP)
    examples = []
    for row_id, prefix, reference in answer_prompts(rows, tokenizer):
        limit = 2 * len(reference) + 8
        greedy = write_units(model, prefix, eosp, 1, limit)
        beam = write_units(model, prefix, eosp, beams, limit) if beams > 1 else greedy
        examples.append(
            {
                "id": row_id,
                "units": len(reference) - 1,
                "exact_greedy": greedy == reference,
                "exact_beam": beam == reference,
                "in_place_greedy": units_in_place(greedy, reference),
                "in_place_beam": units_in_place(beam, reference),
                "reference_likelier": sequence_logprob(model, prefix, reference)
                > sequence_logprob(model, prefix, greedy),
            }
        )
    keys = ("exact_greedy", "exact_beam", "in_place_greedy", "in_place_beam", "reference_likelier")
    summary = {key: sum(float(e[key]) for e in examples) / max(len(examples), 1) for key in keys}
    return {"examples": examples, "count": len(examples), "beams": beams, **summary}


def main() -> None:
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("out/demo/stage3/final"))
    parser.add_argument("--data", type=Path, default=Path("out/demo/stage3_data"), help="`speechgpt build stage3` out")
    parser.add_argument("--split", default="test")
    parser.add_argument("--task", default="com_t2s")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="first N examples of the task (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    rows = [r for r in load_from_disk(str(args.data / "dataset"))[args.split] if r["task"] == args.task]
    result = probe(model, tokenizer, rows[: args.limit or None], args.beams)
    for example in result["examples"]:
        print(json.dumps(example))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    totals = {k: round(v, 3) for k, v in result.items() if isinstance(v, float)}
    print(f"{args.split} {args.task}: {result['count']} examples, beams {args.beams}: {totals}")


if __name__ == "__main__":
    main()
