"""A MOS-style speech quality score without references: DNSMOS P.835 (Microsoft's DNS Challenge), with the ONNX
weights the PyPI package `speechmos` ships.

We read the weights from that package and compute its input features here: `speechmos.dnsmos` imports librosa
(numba, llvmlite) for one mel spectrogram, which `log_mel_p808` reproduces in numpy: librosa's Slaney mel filters, a
periodic Hann window of 321 samples, reflect-padded centered frames (librosa 0.9, which speechmos names) and
`power_to_db(ref=max)` with an 80 dB floor; the scores match speechmos 0.0.1.1 run with librosa to 1e-7. Scoring
follows that package: clips shorter than 9.01 s are repeated to that length, scored on 9.01 s windows every second,
the raw SIG/BAK/OVRL outputs mapped by DNSMOS's polynomials, the P.808 model run on the window's mel spectrogram,
each averaged over the windows. Scores run from 1 (bad) to 5 (excellent); DNSMOS was trained on noisy and enhanced
speech, so it rewards clean, natural-sounding audio and punishes noise and buzz.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
WINDOW_S = 9.01
"""Length of the audio the models see at once."""
N_FFT, HOP, N_MELS = 321, 160, 120
# DNSMOS's maps from raw network outputs to the P.835 scale (non-personalized models)
_POLY_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_POLY_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_POLY_OVR = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


@dataclass(frozen=True)
class MosScore:
    ovrl: float
    """Overall quality (P.835 OVRL), 1-5: the headline number."""
    sig: float
    """Speech signal quality (distortion of the speech itself)."""
    bak: float
    """Background quality (noise intrusiveness; high when quiet)."""
    p808: float
    """P.808 MOS from the second model (overall listening quality)."""

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def models_dir() -> Path:
    """Folder of the DNSMOS ONNX files inside the installed speechmos package (imports none of its code)."""
    folder = Path(str(importlib.resources.files("speechmos"))) / "dnsmos_models"
    if not (folder / "sig_bak_ovr.onnx").is_file():
        raise FileNotFoundError(f"{folder}: no DNSMOS weights (is speechmos installed?)")
    return folder


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    mel = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, hz)


@functools.cache
def mel_filters(n_fft: int = N_FFT, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney-normalized triangular filters from 0 Hz to Nyquist, as librosa.filters.mel."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def log_mel_p808(audio: np.ndarray) -> np.ndarray:
    """(frames, 120) input of the P.808 model: power mel spectrogram in dB relative to its maximum, 80 dB floor,
    scaled by (x + 40) / 40 (speechmos's `audio_melspec`)."""
    padded = np.pad(audio.astype(np.float64), N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[index] * window, n=N_FFT, axis=1)) ** 2
    mel = power @ mel_filters().T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = db - 10.0 * np.log10(max(float(mel.max()), 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    return ((db + 40.0) / 40.0).astype(np.float32)


class Dnsmos:
    """DNSMOS P.835 + P.808 on 16 kHz mono float audio in [-1, 1] (see the module docstring)."""

    def __init__(self, folder: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        folder = folder or models_dir()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.primary = ort.InferenceSession(str(folder / "sig_bak_ovr.onnx"), options, providers=providers)
        self.p808 = ort.InferenceSession(str(folder / "model_v8.onnx"), options, providers=providers)

    def score(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, hop_s: int = 1) -> MosScore:
        """Scores of one clip (repeated to 9.01 s when shorter), averaged over 9.01 s windows every `hop_s` seconds
        (1 as speechmos; a short clip repeated to 9 s then gets ~8 windows of its own cyclic shifts, and each
        window costs ~0.5 s of CPU, so evaluations of many short clips pass `hop_s=10`: one window each)."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"DNSMOS needs {SAMPLE_RATE} Hz audio, got {sample_rate}")
        audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if audio.size == 0 or not np.any(audio):
            raise ValueError("DNSMOS needs non-silent audio")
        length = int(WINDOW_S * SAMPLE_RATE)
        while len(audio) < length:
            audio = np.concatenate([audio, audio])
        if hop_s < 1:
            raise ValueError("hop_s must be >= 1")
        windows = int(np.floor(len(audio) / SAMPLE_RATE) - WINDOW_S) + 1
        parts: list[tuple[float, float, float, float]] = []
        for i in range(0, windows, hop_s):
            # speechmos's float window ends: int((i + 9.01) * 16000) falls a sample short for some i, and such
            # windows are skipped there; kept so that scores match the package's
            segment = audio[i * SAMPLE_RATE : int((i + WINDOW_S) * SAMPLE_RATE)]
            if len(segment) < length:
                continue
            sig, bak, ovr = self.primary.run(None, {"input_1": segment[None]})[0][0]
            p808 = self.p808.run(None, {"input_1": log_mel_p808(segment[:-HOP])[None]})[0][0][0]
            parts.append((float(_POLY_SIG(sig)), float(_POLY_BAK(bak)), float(_POLY_OVR(ovr)), float(p808)))
        sig_m, bak_m, ovr_m, p808_m = np.mean(parts, axis=0)
        return MosScore(ovrl=float(ovr_m), sig=float(sig_m), bak=float(bak_m), p808=float(p808_m))

    def mean(self, waves: Sequence[np.ndarray], hop_s: int = 1) -> MosScore:
        """Per-field mean over clips."""
        if not waves:
            raise ValueError("no clips to score")
        scores = [self.score(wave, hop_s=hop_s) for wave in waves]
        return MosScore(**{f: float(np.mean([getattr(s, f) for s in scores])) for f in ("ovrl", "sig", "bak", "p808")})


@functools.cache
def load_dnsmos(threads: int = 1) -> Dnsmos:
    """One DNSMOS per process and thread count (loading the two models takes ~0.3 s)."""
    return Dnsmos(threads=threads)


def mos_fields() -> tuple[str, ...]:
    return tuple(MosScore.__dataclass_fields__)
