"""`speechgpt compare`'s readable half: report.md, its PNG plots and the example conversations it links."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from speechgpt.data.io import atomic_write_text
from speechgpt.eval.intervals import wilson_interval
from speechgpt.training.metrics import MetricsLog

VARIANTS = ("unified", "frozen")
GROUPS = (
    ("seen_voices", "training voices"),
    ("heldout_voices", "held-out voices"),
    ("person_voice", "a person's voice (Piper)"),
)
PERSON_NOTE = (
    " A third group of questions is spoken by a Piper voice, a neural voice trained on a person's recordings, which "
    "no corpus of the demo speaks: the nearest these tests come to a person asking."
)


def write_report(report: dict[str, Any], cfg: Any, answers: dict[str, list[dict[str, Any]]]) -> Path:
    """report.md with its plots and examples (from each variant's eval chat `answers`) under `cfg.out`."""
    runs = {"unified": cfg.unified_runs, "frozen": cfg.frozen_runs}
    plot_losses(runs, cfg.out / "loss_curves.png")
    plot_accuracy(report, cfg.out / "accuracy.png")
    plot_latency(report, cfg.out / "latency.png")
    folders = {"unified": cfg.unified_qa, "frozen": cfg.frozen_qa}
    examples = {v: copy_examples(answers[v], folders[v], cfg.out / "examples" / v, cfg.examples) for v in VARIANTS}
    text = markdown(report, examples)
    path = cfg.out / "report.md"
    atomic_write_text(path, text)
    return path


def percent(value: float | None, total: int | None = None) -> str:
    """`value` as a percentage; with `total`, put back on its count first (`on_count`)."""
    return "-" if value is None else f"{100 * on_count(value, total):.1f}%"


def on_count(value: float, total: int | None) -> float:
    """A fraction of `total` questions as the count it stands for: the evaluations round fractions to 4 digits (21
    of 46: 0.4565), and printed as they are they would round a second time (45.6% instead of 45.7%)."""
    return round(value * total) / total if total else value


def _intervals_note(variants: dict[str, Any]) -> str:
    group = (variants["unified"].get("questions") or {}).get("heldout_voices")
    size = f" ({group} a voice group: one question is {100 / group:.1f} points)" if group else ""
    return f"Each accuracy comes with its 95% Wilson interval over the questions it counts{size}."


def _has_group(variants: dict[str, Any], group: str) -> bool:
    return any((v.get("questions") or {}).get(group) for v in variants.values())


def _person_note(variants: dict[str, Any]) -> str:
    return PERSON_NOTE if _has_group(variants, "person_voice") else ""


def rate(value: float | None, total: int | None) -> str:
    """A rate with its 95% Wilson interval over `total` questions, put back on its count: `21.7% (12-36)`."""
    if value is None or not total:
        return percent(value)
    low, high = wilson_interval(on_count(value, total), total)
    return f"{percent(value, total)} ({100 * low:.0f}-{100 * high:.0f})"


def seconds(row: dict[str, Any] | None) -> str:
    return "-" if not row else f"{1000 * row['p50']:.0f} / {1000 * row['p90']:.0f} ms"


SPOKEN_FROM_TEXT = (
    "The unified variant voices a spoken question's answer from text (`session.speak_from: text`): the chain writes "
    "the transcript and the text answer, then a second pass writes the units from the transcript typed and that "
    "answer, as for a typed question; SpeechGPT writes them in the same pass, after the question's speech."
)


def markdown(report: dict[str, Any], examples: dict[str, list[dict[str, Any]]]) -> str:
    backbone, variants = report["backbone"], report["variants"]
    lines = [
        "# Unified vs frozen-LLM: the same backbone, the same speech, the same questions",
        "",
        f"Backbone before speech training: text accuracy {percent(backbone['text_accuracy'])} on "
        f"{backbone['questions']} test questions (the ceiling); held-out text loss "
        f"{_number(backbone['heldout_text_loss'])}. The test questions are spoken by held-out voices and by training "
        f"voices in new renditions; no clip of a test question was trained on.{_person_note(variants)} "
        f"{_intervals_note(variants)}",
        "",
        "| | unified | frozen |",
        "|---|---|---|",
    ]
    u, f = variants["unified"], variants["frozen"]

    def row(label: str, unified: str, frozen: str) -> None:
        lines.append(f"| {label} | {unified} | {frozen} |")

    un, fn = u.get("questions") or {}, f.get("questions") or {}
    groups = [(group, words) for group, words in GROUPS if group != "person_voice" or _has_group(variants, group)]
    for key, label in (("s2t_accuracy", "S2T accuracy"), ("s2s_accuracy", "S2S accuracy")):
        for group, words in groups:
            cells = [rate((v[key] or {}).get(group), n.get(group)) for v, n in ((u, un), (f, fn))]
            row(f"{label}, {words}", *cells)
    typed = [rate(v.get("t2s_accuracy"), n.get("typed")) for v, n in ((u, un), (f, fn))]
    row("T2S accuracy: typed questions, spoken answers", *typed)
    direct, direct_n = u.get("direct_s2t_accuracy") or {}, u.get("direct_questions") or {}
    row(
        "S2T accuracy, direct (no transcript), held-out voices",
        rate(direct.get("heldout_voices"), direct_n.get("heldout_voices")),
        "-",
    )
    on_time = rate(f.get("state_accuracy"), fn.get("all"))
    row("answered at the question's end (state head), every voice group", "- (given the whole question)", on_time)
    row("text accuracy after training", percent(u["text_accuracy_after"]), percent(f["text_accuracy_after"]))
    row("held-out text loss after", _number(u["heldout_text_loss_after"]), _number(f["heldout_text_loss_after"]))
    for group, words in groups:
        row(f"ASR WER, test questions, {words}", *(percent((v["asr_wer"] or {}).get(group)) for v in (u, f)))
        exact = [percent((v.get("asr_exact") or {}).get(group), n.get(group)) for v, n in ((u, un), (f, fn))]
        row(f"exact question transcripts, {words}", *exact)
        u_sent, f_sent = u["asr_wer_sentences"] or {}, f["asr_wer_sentences"] or {}
        if group in u_sent or group in f_sent:
            row(f"ASR WER, unseen sentences, {words}", percent(u_sent.get(group)), percent(f_sent.get(group)))
    read = [v.get("tts") or {} for v in (u, f)]
    row(
        "TTS: new sentences read aloud, judge WER (the answer voice's own recordings)",
        *(f"{percent(t.get('wer'))} ({percent(t.get('reference_wer'))})" if t else "-" for t in read),
    )
    row("end of speech -> first audio, p50 / p90", seconds(u["ttfa_s"]), seconds(f["ttfa_s"]))
    for component, label in (("first_token", "first text token"), ("first_unit", "first answer unit")):
        row(
            f"end of speech -> {label}, p50 / p90",
            seconds(u["latency_s"].get(component)),
            seconds(f["latency_s"].get(component)),
        )
    row("parameters trained", f"{u['params_trained']:,}", f"{f['params_trained']:,}")
    row("training time (steps only)", f"{u['train_seconds']:.0f} s", f"{f['train_seconds']:.0f} s")
    if u.get("speak_from") == "text":
        lines += ["", SPOKEN_FROM_TEXT]
    lines += ["", "![loss curves](loss_curves.png)", "![accuracy](accuracy.png)", "![latency](latency.png)", ""]
    for variant in VARIANTS:
        lines += [f"## Example conversations: {variant}", ""]
        lines += [_example(e) for e in examples[variant]] or ["(none saved)"]
        lines.append("")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _example(row: dict[str, Any]) -> str:
    heard = f", the judge hears {row['heard']!r}" if row.get("heard") else ""
    transcript = f" -> transcript {row['transcript']!r}" if row.get("transcript") is not None else ""
    audio = " ".join(
        f"[{name}]({row[key]})"
        for key, name in (("question_audio", "question"), ("answer_audio", "answer"))
        if row.get(key)
    )
    return (
        f"- {row['voices']} voice {row['speaker']}: {row['question']!r}{transcript} -> answer "
        f"{row['text']!r} (expected {row['expected']!r}){heard}. {audio}"
    )


def copy_examples(rows: list[dict[str, Any]], qa_folder: Path, out: Path, count: int) -> list[dict[str, Any]]:
    """Up to `count` answered questions that kept their audio (copies of their rows), the audio copied from
    `qa_folder` beside the report."""
    chosen = [dict(r) for r in rows if r.get("question_audio")][:count]
    out.mkdir(parents=True, exist_ok=True)
    for row in chosen:
        for key in ("question_audio", "answer_audio"):
            if row.get(key):
                target = out / Path(row[key]).name
                shutil.copyfile(qa_folder / row[key], target)
                row[key] = str(target.relative_to(out.parent.parent))
    return chosen


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(runs: dict[str, list[Path]], path: Path) -> None:
    """Training loss per step of every stage of both variants, one panel per stage."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, max(len(runs[v]) for v in VARIANTS), figsize=(12, 6), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for variant_row, variant in enumerate(VARIANTS):
        for column, folder in enumerate(runs[variant]):
            ax = axes[variant_row][column]
            ax.set_visible(True)
            records = MetricsLog(folder, enabled=False).records()
            steps = [(r["step"], r["loss"]) for r in records if "loss" in r]
            if steps:
                ax.plot(*zip(*steps, strict=True), lw=1)
            ax.set_title(f"{variant}: {folder.name}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_accuracy(report: dict[str, Any], path: Path) -> None:
    """Accuracy per variant, mode and voice group, beside the backbone's text accuracy; the spoken questions' rates
    carry their 95% Wilson intervals."""
    plt = _pyplot()
    bars: list[tuple[str, float, int | None]] = [("backbone text", report["backbone"]["text_accuracy"], None)]
    for variant in VARIANTS:
        v = report["variants"][variant]
        for key, label, counts in (
            ("s2t_accuracy", "S2T", "questions"),
            ("direct_s2t_accuracy", "direct S2T", "direct_questions"),
            ("s2s_accuracy", "S2S", "questions"),
        ):
            for group, words in GROUPS:
                value = (v.get(key) or {}).get(group)
                if value is not None:
                    bars.append((f"{variant} {label}\n{words}", value, (v.get(counts) or {}).get(group)))
        bars.append((f"{variant} text after", v["text_accuracy_after"], None))
    spans = [wilson_interval(value, total) if total else (value, value) for _, value, total in bars]
    below = [100 * (value - low) for (_, value, _), (low, _) in zip(bars, spans, strict=True)]
    above = [100 * (high - value) for (_, value, _), (_, high) in zip(bars, spans, strict=True)]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(bars)), 4))
    ax.bar(range(len(bars)), [100 * b[1] for b in bars], yerr=[below, above], capsize=3)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("% correct (95% interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_latency(report: dict[str, Any], path: Path) -> None:
    """p50 and p90 of each measured latency component per variant, from the end of speech."""
    plt = _pyplot()
    bars = []
    for variant in VARIANTS:
        for component, row in report["variants"][variant]["latency_s"].items():
            if row:
                bars.append((f"{variant}\n{component}", row["p50"], row["p90"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(bars)), 3.5))
    positions = range(len(bars))
    ax.bar([p - 0.2 for p in positions], [1000 * b[1] for b in bars], width=0.4, label="p50")
    ax.bar([p + 0.2 for p in positions], [1000 * b[2] for b in bars], width=0.4, label="p90")
    ax.set_xticks(list(positions), [b[0] for b in bars], fontsize=7)
    ax.set_ylabel("ms after the end of speech")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
