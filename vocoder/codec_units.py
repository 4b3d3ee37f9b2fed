"""`speechgpt vocoder codec-units`: EnCodec codes as the speech units of the frozen-LLM variant's speech decoder (the
option Freeze-Omni takes: a single-codebook codec), and the vocoder folder that turns them back into audio.

A corpus is encoded by the 24 kHz EnCodec at 0.75 kbps (codebook 0, 75 codes a second) into the units contract
(`units` = one code per frame, nothing merged, `durations` all 1, `encoder` = `encodec24k@75Hz-q1+km1024:<digest of
the codebook>`), so `speechgpt train frozen-tts units=[<out>]` trains on them unchanged (it sees the repeats and
stops treating units as merged), and `<out>/vocoder` (`codec.json`) decodes them: `speechgpt chat
speech_decoder=... vocoder=<out>/vocoder`. Unreadable clips are skipped and listed in rejected.jsonl.

    speechgpt vocoder codec-units corpus=out/demo/voice_corpus out=out/codec_units codec.weights=encodec_24khz.th
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechgpt.config import save_config
from speechgpt.data.audio import read_audio
from speechgpt.data.corpus import load_corpus, write_dataset
from speechgpt.data.io import atomic_write_text
from speechgpt.data.units import EncoderTag, units_features
from vocoder.codec import CODEBOOK_SIZE, FRAME_RATE, CodecConfig, EncodecCodec, build_codec

log = logging.getLogger(__name__)
CODEC_FILE = "codec.json"


@dataclass(kw_only=True)
class Config:
    corpus: Path
    """Corpus folder (`speechgpt corpus synth|import`)."""
    out: Path = Path("out/codec_units")
    """Output folder: dataset/ (the units contract), rejected.jsonl, summary.json, vocoder/ (codec.json)."""
    codec: CodecConfig = field(default_factory=lambda: CodecConfig(bandwidth=0.75))
    """The codec; one codebook (bandwidth 0.75), as a single-codebook speech decoder predicts."""
    splits: list[str] | None = None
    """Corpus splits encoded (null: all)."""

    def __post_init__(self) -> None:
        if self.codec.n_q != 1:
            raise ValueError(
                f"codec.bandwidth must be 0.75 (one codebook) for speech units, got {self.codec.bandwidth}"
            )


class CodecVocoder:
    """Codes of codebook 0 (one per 75 Hz frame) -> 16 kHz audio; satisfies speechgpt.infer.vocoding.UnitsToAudio.
    Given `durations`, each code is repeated that many frames."""

    sample_rate = 16_000

    def __init__(self, codec: EncodecCodec) -> None:
        self.codec = codec

    def __call__(
        self, units: Sequence[int], durations: Sequence[int] | None = None, speaker: str | None = None
    ) -> np.ndarray:
        codes = torch.as_tensor(list(units), dtype=torch.long)
        if durations is not None:
            codes = torch.repeat_interleave(codes, torch.as_tensor(list(durations), dtype=torch.long))
        return self.codec.decode(codes[None], self.sample_rate)


def codebook_tag(codec: EncodecCodec) -> EncoderTag:
    """The units' encoder tag: the codec, its frame rate and codebook 0's digest (other weights, other ids)."""
    codebook: Any = codec.model.quantizer.vq.layers[0]._codebook
    table = codebook.embed.detach().cpu().contiguous()
    digest = hashlib.sha256(table.numpy().tobytes()).hexdigest()[:16]
    return EncoderTag(f"encodec24k@{FRAME_RATE}Hz-q1", CODEBOOK_SIZE, digest)


def load_codec_vocoder(folder: str | Path) -> CodecVocoder:
    """The vocoder of a `codec-units` output (its vocoder/ folder or the folder holding codec.json)."""
    folder = Path(folder)
    folder = folder / "vocoder" if (folder / "vocoder" / CODEC_FILE).is_file() else folder
    meta = json.loads((folder / CODEC_FILE).read_text(encoding="utf-8"))
    return CodecVocoder(build_codec(CodecConfig(**meta["codec"])))


def run(cfg: Config) -> Path:
    save_config(cfg, cfg.out)
    codec = build_codec(cfg.codec)
    tag = str(codebook_tag(codec))
    corpus = load_corpus(cfg.corpus)
    rows, rejected = [], []
    for row in tqdm(corpus, desc="codec units", unit="clip"):
        if cfg.splits is not None and row["split"] not in cfg.splits:
            continue
        try:
            samples = read_audio(row["audio"]).samples
        except Exception as err:  # any unreadable clip is listed, never fatal
            rejected.append({"id": row["id"], "audio": row["audio"], "reason": f"unreadable audio: {err}"})
            continue
        codes = codec.encode(samples)[0].tolist()
        if not codes:
            rejected.append({"id": row["id"], "audio": row["audio"], "reason": "no audio"})
            continue
        rows.append({**row, "units": codes, "durations": [1] * len(codes), "encoder": tag})
    if not rows:
        raise ValueError(f"{cfg.corpus}: no clip could be encoded (see {cfg.out / 'rejected.jsonl'})")
    write_dataset(rows, cfg.out / "dataset", units_features())
    atomic_write_text(cfg.out / "rejected.jsonl", "".join(json.dumps(r) + "\n" for r in rejected))
    summary: dict[str, Any] = {"clips": len(rows), "rejected": len(rejected), "encoder": tag, "frame_rate": FRAME_RATE}
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    (cfg.out / "vocoder").mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.out / "vocoder" / CODEC_FILE, json.dumps({"codec": asdict(cfg.codec)}, indent=2) + "\n")
    if rejected:
        log.warning("%d clips skipped (%s)", len(rejected), cfg.out / "rejected.jsonl")
    log.info("codec units: %s", summary)
    return cfg.out
