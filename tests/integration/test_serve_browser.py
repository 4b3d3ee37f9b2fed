"""`speechgpt serve` in a real browser: the command starts on a free port with a tiny random model, k-means and
vocoder (the real session, decoding and vocoding code), headless Chromium loads the page, uploads a WAV and must show
the transcript and answer and end with a playable <audio> answer; a typed question, a recording from Chromium's fake
microphone (webm/opus, decoded by ffmpeg) and a refused upload follow. A tiny frozen-LLM variant folder served the same
way shows its state decisions per chunk beside its text answer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speechgpt.data.audio import write_audio
from tests.chat_fixtures import make_chat_setup, make_frozen_model
from tests.conftest import REPO, subprocess_env

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",  # grant the microphone without asking
    "--use-fake-device-for-media-stream",  # a synthetic microphone (beeps), recorded by MediaRecorder as webm/opus
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_chat_setup(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def server_url(setup: dict[str, Path]) -> Iterator[str]:
    """`speechgpt serve` on a free port; its URL from the line it prints."""
    yield from serve(
        f"model={setup['model']}",
        f"kmeans={setup['kmeans']}",
        f"vocoder={setup['vocoder']}",
        "session.min_units=40",  # a random model: make sure the spoken answer lasts long enough to hear
        "session.sampling.max_new_tokens=120",
        "session.sampling.seed=0",
    )


@pytest.fixture(scope="module")
def frozen_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same for a frozen-variant folder whose state head keeps listening (its answer comes at the end)."""
    folder = make_frozen_model(tmp_path_factory.mktemp("frozen"), state_bias=(60.0, 0.0, 0.0))
    yield from serve(f"model={folder}", "session.sampling.max_new_tokens=8")


def serve(*overrides: str) -> Iterator[str]:
    cmd = [*(sys.executable, "-m", "speechgpt.cli", "serve"), "port=0", "max_audio_s=5", *overrides]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert proc.stdout is not None
    url = None
    deadline = time.monotonic() + 240
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"open (http://\S+/)", line)
        url = found.group(1) if found else None
    if url is None:
        proc.kill()
        pytest.fail("speechgpt serve did not start:\n" + "".join(lines[-30:]))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium and chromedriver are required (scripts/setup.sh installs chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, script: str, timeout: float = 120) -> Any:
    """Poll a JS expression until it is truthy; fail with the page's status and error texts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.2)
    state = driver.execute_script(
        "return {status: document.getElementById('status').textContent,"
        " error: document.getElementById('error').textContent}"
    )
    pytest.fail(f"timed out waiting for `{script}`; page: {json.dumps(state)}")


def test_page_answers_an_uploaded_wav_with_text_and_audio(
    browser: Any, server_url: str, setup: dict[str, Path], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    browser.get(server_url)
    wait_for(browser, "document.getElementById('model').textContent.startsWith('model:')", 30)
    browser.find_element(By.ID, "file").send_keys(str(setup["wav"]))
    browser.find_element(By.ID, "send-file").click()

    audio = "document.getElementById('answer-audio')"
    wait_for(browser, f"{audio}.dataset.bytes && {audio}.readyState >= 1 && {audio}.duration > 0")
    page = browser.execute_script(
        f"""return {{transcript: document.getElementById('transcript').textContent,
                   answer: document.getElementById('answer').textContent,
                   error: document.getElementById('error').hidden,
                   bytes: Number({audio}.dataset.bytes), duration: {audio}.duration, hidden: {audio}.hidden,
                   history: document.querySelectorAll('#history li').length,
                   timing: document.getElementById('timing').textContent}}"""
    )
    assert page["transcript"].strip() and page["answer"].strip(), page
    assert page["error"] and not page["hidden"] and page["history"] == 1, page
    assert page["bytes"] > 44 + 2 * 16_000 * 0.5, page  # a WAV header plus over 0.5 s of 16-bit samples
    assert page["duration"] == pytest.approx((page["bytes"] - 44) / 2 / 16_000, rel=0.01), page
    assert "first audio after" in page["timing"], page

    browser.find_element(By.ID, "text").send_keys("what is two plus two")
    browser.find_element(By.ID, "send-text").click()
    wait_for(browser, "document.querySelectorAll('#history li').length === 2")
    assert browser.find_element(By.ID, "answer").text.strip()
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None

    browser.find_element(By.ID, "record").click()
    wait_for(browser, "document.getElementById('record').classList.contains('recording')", 10)
    time.sleep(1.5)
    browser.find_element(By.ID, "record").click()  # stop: the recording is sent
    wait_for(browser, "document.querySelectorAll('#history li').length === 3")
    assert browser.find_element(By.ID, "transcript").text.strip()
    assert int(browser.execute_script(f"return {audio}.dataset.bytes || 0")) > 44

    long_wav = tmp_path / "long.wav"
    write_audio(long_wav, 0.1 * np.sin(np.arange(6 * 16_000) / 10).astype(np.float32))
    browser.find_element(By.ID, "file").clear()
    browser.find_element(By.ID, "file").send_keys(str(long_wav))
    browser.find_element(By.ID, "send-file").click()
    shown = wait_for(
        browser, "!document.getElementById('error').hidden && document.getElementById('error').textContent"
    )
    assert shown == "audio too long: 6.0 s (limit 5 s)"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "/api/chat" not in e["message"]]
    assert errors == [], errors  # no script errors (the refused upload's 400 is logged by Chromium and expected)
    print(f"browser round trip: {time.monotonic() - started:.1f} s")


def test_frozen_page_shows_the_state_decisions_and_the_text_answer(
    browser: Any, frozen_url: str, setup: dict[str, Path]
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(frozen_url)
    wait_for(browser, "document.getElementById('model').textContent.includes('frozen-LLM variant')", 30)
    browser.find_element(By.ID, "file").send_keys(str(setup["wav"]))
    browser.find_element(By.ID, "send-file").click()
    wait_for(browser, "document.querySelectorAll('#history li').length === 1")
    page = browser.execute_script(
        """return {states: [...document.querySelectorAll('#states span')].map((s) => s.className),
                   shown: !document.getElementById('states-row').hidden,
                   answer: document.getElementById('answer').textContent,
                   timing: document.getElementById('timing').textContent,
                   problems: document.getElementById('problems').textContent}"""
    )
    # 1.2 s of question + 0.48 s of trailing silence: 11 chunks, one mark each
    assert page["shown"] and page["states"] == ["keep_listening"] * 11, page
    assert page["answer"].strip() and "no decision: answered at the end of the audio" in page["timing"], page
    assert "no speech decoder" in page["problems"], page
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
