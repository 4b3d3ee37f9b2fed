"""make eval-vocoder: which demo steps it reruns, and that its last two lines are the two WER ratios."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.eval_vocoder import step_done
from speechgpt.app.resynth import summary_lines, wer_ratio


def test_step_done_retrains_a_vocoder_that_held_no_sentence_out(tmp_path: Path) -> None:
    assert not step_done("voice_units", tmp_path) and not step_done("vocoder", tmp_path)
    (tmp_path / "dataset").mkdir()
    assert step_done("voice_units", tmp_path)
    meta = tmp_path / "vocoder" / "vocoder.json"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"route": "mel", "speakers": ["a", "any"]}))  # an older, multi-speaker demo's
    assert not step_done("vocoder", tmp_path)
    meta.write_text(json.dumps({"route": "mel", "answer_voice": "v", "heldout_text_fraction": 0.15}))
    assert step_done("vocoder", tmp_path)


def test_summary_ends_with_the_two_ratios() -> None:
    def row(wer: float) -> dict[str, float]:
        return {"wer": wer, "cer": wer / 2, "mos_ovrl": 2.0, "mcd_db": 5.0}

    sets = {
        "answer_voice": {"clips": 3, "original": row(0.1), "given": row(0.12), "predicted": row(0.15)},
        "heldout_voices": {"clips": 3, "original": row(0.2), "predicted": row(0.5)},
    }
    report = {"sets": sets} | {f"ratio_{k}": wer_ratio(v, "predicted") for k, v in sets.items()}
    lines = summary_lines(report)
    assert lines[-2:] == ["ratio_answer_voice 1.500", "ratio_heldout_voices 2.500"]
    assert len(lines) == 1 + 5 + 2 and "answer_voice    given" in lines[2]
    assert wer_ratio({"original": {"wer": 0.0}, "given": {"wer": 0.0}}, "given") == 1.0
    assert math.isinf(wer_ratio({"original": {"wer": 0.0}, "given": {"wer": 0.1}}, "given"))
