#!/usr/bin/env bash
# Idempotent set-up behind every make target: Debian packages, .venv with Python 3.13, editable install.
# With everything in place it only checks and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ffmpeg sox                                  # audio decoding for torchcodec / datasets, conversions
  flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng   # offline TTS voices
  wordnet-base                                # real English text (example sentences, glosses)
  chromium chromium-driver                    # headless browser test of `speechgpt serve` (selenium)
)

if command -v dpkg-query >/dev/null; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
      echo "setup: installing Debian packages: ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "setup: missing Debian packages; run:" >&2
      echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
  fi
else
  echo "setup: not a Debian system; install these packages (or equivalents) yourself: ${APT_PACKAGES[*]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
  python=""
  for candidate in python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 \
      /usr/local/bin/python3.13 /usr/bin/python3.13; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      python=$candidate
      break
    fi
  done
  [ -n "$python" ] || { echo "setup: Python 3.13 not found (install python3.13)" >&2; exit 1; }
  echo "setup: creating .venv with $python"
  "$python" -m venv .venv
fi

stamp=.venv/.installed-pyproject
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing the toolkit and its pinned dependencies into .venv (first time: a few minutes)"
  # uv installs the same pins about 5x faster than pip (20 s against 97 s with warm caches, docs/benchmarks.md);
  # pip does it where uv cannot be had or cannot reach an index (uv does not read pip's config, so an index set
  # there is pip's alone; local wheel folders in PIP_FIND_LINKS are passed on).
  if .venv/bin/python -m pip install -q --disable-pip-version-check uv 2>/dev/null &&
    .venv/bin/python -m uv pip install -q --python .venv/bin/python ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} \
      -e '.[test]'; then
    .venv/bin/python -m uv pip check --python .venv/bin/python
  else
    echo "setup: uv could not install; pip installs instead"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    .venv/bin/python -m pip check
  fi
  echo "$wanted" > "$stamp"
fi
