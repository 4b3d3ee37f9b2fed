"""How a text sounds: espeak-ng's grapheme-to-phoneme rules (the front end of Piper and of VITS recipes), for a
speech decoder that must say sentences it never heard.

A decoder that reads BPE tokens (or their spelling) must learn English letter-to-sound rules from its training
speech, a thousand or so sentences in the demo. Phonemes give it those rules: each sound has one symbol in every word
that has it, so units learned in one word carry over to the next.

    phonemize("the cat")          # ('ð', 'ə', ' ', 'k', 'ˈ', 'æ', 't')
    ids = phoneme_ids("the cat")  # [PHONEME_OFFSET + index, ...]; 1 for a symbol outside PHONEME_SYMBOLS
    reader = TextPhonemes(tokenizer)
    ids, lengths = reader(text_ids, text_lengths)   # (B, T) token ids -> (B, Q) phoneme ids (0 pads), (B,)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

WORD_BREAK = " "
"""The symbol between words (and clauses)."""
PHONEME_SYMBOLS: tuple[str, ...] = (
    WORD_BREAK, "ˈ", "ˌ",
    "p", "b", "t", "d", "k", "ɡ", "ʔ", "ɾ", "f", "v", "θ", "ð", "s", "z", "ʃ", "ʒ", "h", "x", "tʃ", "dʒ",
    "m", "n", "ŋ", "n̩", "l", "əl", "ɹ", "r", "j", "w",
    "i", "iː", "ɪ", "e", "eɪ", "ɛ", "æ", "a", "aɪ", "aʊ", "ɐ", "ə", "ɚ", "ᵻ", "ʌ", "ɑ", "ɑː", "ɒ", "ɔ", "ɔː", "ɔɪ",
    "o", "oː", "oʊ", "ʊ", "u", "uː", "ɜː", "iə", "ɑ̃", "ɑːɹ", "oːɹ", "ɔːɹ", "ɛɹ", "ʊɹ", "ɪɹ", "aɪɚ", "aɪə", "ɜ",
)  # fmt: skip
"""espeak-ng's American English symbols (IPA): the word break, the two stress marks, consonants, vowels."""
PHONEME_OFFSET = 2
"""Phoneme ids start here: 0 pads, 1 is a symbol outside PHONEME_SYMBOLS (another language's)."""
UNKNOWN = 1
_INDEX = {symbol: PHONEME_OFFSET + i for i, symbol in enumerate(PHONEME_SYMBOLS)}
_STRESS = re.compile(r"[ˈˌ]|[^ˈˌ]+")


class EspeakLibrary:
    """libespeak-ng through ctypes: a text -> its IPA phonemes separated by `_`, clauses by spaces, as the command
    `espeak-ng -q --ipa --sep=_` writes them, in microseconds instead of a process (~10 ms). The library keeps one
    voice at a time: calls take a lock."""

    def __init__(self, lib: Any) -> None:
        self.lib, self.voice, self.lock = lib, "", threading.Lock()

    @classmethod
    def load(cls) -> EspeakLibrary | None:
        """The installed library, initialized, or None where it does not load."""
        try:
            lib = ctypes.cdll.LoadLibrary(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
        except OSError:
            return None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        synchronous = 0x02  # AUDIO_OUTPUT_SYNCHRONOUS: no audio device
        return cls(lib) if lib.espeak_Initialize(synchronous, 0, None, 0) > 0 else None

    def __call__(self, text: str, voice: str) -> str:
        utf8, ipa_with_separator = 1, 0x02 | (ord("_") << 8)  # espeakCHARS_UTF8; espeakPHONEMES_IPA, separator
        with self.lock:
            if voice != self.voice:
                self.voice = ""  # unknown until the library takes one
                if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"espeak-ng has no voice {voice!r} (`espeak-ng --voices` lists them)")
                self.voice = voice
            clauses = []
            # the library moves `rest` past each clause it reads, to NULL at the end; it may still hold the text's
            # last punctuation ("dream.." keeps a "."), which it would read as "dot" at the start of the next text:
            # a space read after the text settles it within this call, so each text reads the same in any order
            for rest in (ctypes.c_char_p(text.encode()), ctypes.c_char_p(b" ")):
                while rest.value:
                    clause = self.lib.espeak_TextToPhonemes(ctypes.byref(rest), utf8, ipa_with_separator)
                    clauses.append((clause or b"").decode())
            return " ".join(clauses)


_LOADING = threading.Lock()
_LOADED: list[EspeakLibrary | None] = []
"""The library once loaded (or None where it does not load): espeak-ng is one global state, initialized once."""


def _library() -> EspeakLibrary | None:
    with _LOADING:  # two threads initializing espeak-ng at once hang in it
        if not _LOADED:
            _LOADED.append(EspeakLibrary.load())
        return _LOADED[0]


def _command(text: str, voice: str) -> str:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("phonemes need espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; `make setup` does it)")
    done = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "--sep=_", "-v", voice, "--", text], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"espeak-ng failed on {text!r} (voice {voice}): {done.stderr.strip()}")
    return done.stdout


@functools.lru_cache(maxsize=1 << 16)
def phonemize(text: str, voice: str = "en-us") -> tuple[str, ...]:
    """The phoneme symbols of `text` in espeak-ng's `voice` (its library where it loads, else its command):
    stress marks as symbols of their own, WORD_BREAK between words and clauses, nothing at either end."""
    library = _library()
    written = library(text, voice) if library is not None else _command(text, voice)
    symbols: list[str] = []
    for word in written.split():
        if symbols:
            symbols.append(WORD_BREAK)
        for phone in filter(None, word.split("_")):
            symbols += _STRESS.findall(phone)
    return tuple(symbols)


def phonemize_all(texts: Iterable[str], workers: int = 4) -> None:
    """Fill `phoneme_ids`' cache for many texts at once. The library answers one text at a time (its lock); where
    only the command runs, each text is one espeak-ng process, `workers` at a time."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(phoneme_ids, sorted(set(texts))))


def phoneme_ids(text: str) -> list[int]:
    """The ids of `text`'s phonemes (whitespace at the ends and between words does not matter)."""
    return [_INDEX.get(symbol, UNKNOWN) for symbol in phonemize(" ".join(text.split()))]


class TextPhonemes:
    """Token ids -> the phoneme ids of the text they decode to (the whole row at once, so each word is said as a
    word, not as its BPE pieces)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) with lengths (B,) -> phoneme ids (B, Q), 0 past each row's end, and their lengths (B,)."""
        rows = []
        for row, length in zip(ids.tolist(), lengths.tolist(), strict=True):
            rows.append(phoneme_ids(self.text(row[: int(length)])) or [PHONEME_OFFSET])  # "": one word break
        width = max(map(len, rows))
        padded = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=ids.device)
        return padded, torch.tensor(list(map(len, rows)), dtype=torch.long, device=ids.device)
