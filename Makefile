# Every target runs the same idempotent set-up first (scripts/setup.sh): Debian packages, .venv, editable install.
VENV := .venv
PY := $(VENV)/bin/python
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-all lint bench bench-corpus bench-units bench-train bench-shared-prefix bench-precision bench-frozen-frames bench-mfu bench-gpu bench-vocoder bench-chat eval-units eval-unit-layers eval-vocoder eval-answer-voices eval-answer-units eval-frozen-probe eval-duplex

setup:
	@bash scripts/setup.sh

demo: setup  ## the pipeline on the embedded offline default; artifacts and summary.json in out/demo
	$(VENV)/bin/speechgpt demo

test: setup  ## fast unit and integration tests (what CI runs)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -q

test-all: setup  ## every test, the slow ones too
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: bench-corpus bench-units bench-train bench-shared-prefix bench-precision bench-frozen-frames bench-vocoder bench-chat

bench-corpus: setup  ## corpus synthesis: 2 worker processes against 1, same clips
	$(PY) -m benchmarks.bench_corpus

bench-units: setup  ## HuBERT-base layer 6: our extractor against a naive SpeechGPT-style loop, same audio
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.bench_units

bench-train: setup  ## the engine (packed rows, head on trained tokens) against SpeechGPT-style padded batches, same data and model
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.bench_train

bench-shared-prefix: setup  ## the engine with the system text once per packed row against whole examples, same rows
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.bench_shared_prefix

bench-precision: setup  ## the engine in float32 against bfloat16 autocast, same models and rows
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.bench_precision

bench-frozen-frames: setup  ## frozen-asr steps with the frozen encoder's frames computed once against at every step, same model and clips
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.bench_frozen_frames

bench-mfu: setup  ## model FLOPs utilization of the engine: ~1.1B Llama, ZeRO-2, bf16 on GPU (a 4x256 model on CPU)
	$(PY) -m benchmarks.bench_mfu

bench-gpu: setup  ## GPU-only figures in one run (<8 min): 1B MFU, packed vs padded, HuBERT units, HiFi-GAN steps/s
	$(PY) -m benchmarks.bench_gpu

bench-vocoder: setup  ## default vocoder, one thread: real-time factor whole and streamed, time to first audio
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.bench_vocoder

bench-chat: setup  ## time to first audio, streamed against whole-answer vocoding (uses the demo's model; runs it if absent)
	@test -d out/demo/stage3/final -a -d out/demo/vocoder || $(MAKE) demo
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.bench_chat

eval-vocoder: setup  ## spoken answers in the answer voice: judge WER/CER, DNSMOS, MCD on held-out sentences (runs the demo if absent)
	@test -d out/demo/units -a -d out/demo/qa || $(MAKE) demo
	OMP_NUM_THREADS=2 $(PY) -m benchmarks.eval_vocoder

eval-answer-voices: setup  ## which voice says the answers: the judge on each candidate's open sentences and the domain's answers (~15 min; runs the demo if absent)
	@test -d out/demo/qa || $(MAKE) demo
	OMP_NUM_THREADS=2 $(PY) -m benchmarks.answer_voices

eval-duplex: setup  ## the frozen variant in duplex mode on streams of held-out questions (held-out voices, then the Piper voice), clean and as recordings sound (runs the demo if absent)
	@test -d out/demo/frozen_qa/final -a -d out/demo/qa_speech || $(MAKE) demo
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.duplex_streams
	if [ -d out/demo/qa_speech_person ]; then \
	  OMP_NUM_THREADS=1 $(PY) -m benchmarks.duplex_streams --questions out/demo/qa_speech_person; fi

eval-answer-units: setup  ## the stage-3 model writes each test answer's units, given the right text answer: greedy and beam (runs the demo if absent)
	@test -d out/demo/stage3/final -a -d out/demo/stage3_data || $(MAKE) demo
	$(PY) -m benchmarks.answer_units

eval-units: setup  ## compare unit encoders: paired edit distances and a CTC recognizer on held-out voices (~25 min)
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.compare_unit_encoders

eval-unit-layers: setup  ## which Whisper layer to quantize: voice ratio and lookup resynthesis per layer (~6 min; runs the demo if absent)
	@test -d out/demo/corpus/dataset -a -d out/demo/voice_corpus/dataset || $(MAKE) demo
	OMP_NUM_THREADS=2 $(PY) -m benchmarks.unit_layers

eval-frozen-probe: setup  ## does the speech reach the frozen LLM? transcripts after own/other clip; spread-out questions; whole-clip S2T (runs the demo if absent)
	@test -d out/demo/frozen_asr/final -a -d out/demo/corpus || $(MAKE) demo
	OMP_NUM_THREADS=2 $(PY) -m benchmarks.frozen_speech_probe
	OMP_NUM_THREADS=2 $(PY) -m benchmarks.frozen_spread_probe
	OMP_NUM_THREADS=2 $(PY) -m benchmarks.frozen_whole_clip_qa
