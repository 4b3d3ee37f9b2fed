"""Unit vocoders: merged units (+ durations, speaker) -> 16 kHz speech, whole or streamed.

Two routes behind one interface (`vocoder.runtime.Vocoder`, a `speechgpt.infer.vocoding.StreamingVocoder`):
"mel" (units -> log-mel conv net + Griffin-Lim; trains in minutes on a CPU, the embedded default) and "hifigan"
(unit_hifigan's UnitVocoder and UnitDiscriminator; the GPU route). `vocoder.train` trains either with its duration
predictor (`vocoder.duration`), `vocoder.load.load_vocoder` reads what it saved (and unit_hifigan or legacy
CodeHiFiGAN checkpoints, `vocoder.legacy`), `vocoder.synth` writes WAVs, `vocoder.codec` wraps EnCodec.
Importing this package loads nothing heavy.
"""
