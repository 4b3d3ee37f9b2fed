// The chat page: sends text, an uploaded audio file or a recording to /api/chat and reads the answer back as
// NDJSON events (the frozen-LLM variant's state decisions per 160 ms chunk, transcript, text, audio chunks of 16-bit
// PCM in base64, done). Audio chunks play as they arrive through Web Audio; at the end the whole answer becomes a WAV
// blob in the <audio> element.
"use strict";

const $ = (id) => document.getElementById(id);
let limits = { max_upload_bytes: Infinity, max_audio_s: Infinity, max_text_chars: Infinity };
let busy = false;

function setBusy(on, message) {
  busy = on;
  for (const id of ["send-text", "send-file", "reset"]) $(id).disabled = on;
  $("record").disabled = on && !recorder;
  $("status").textContent = message || "";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function clearAnswer() {
  showError("");
  $("states").replaceChildren();
  $("states-row").hidden = true;
  $("transcript").textContent = "";
  $("answer").textContent = "";
  $("problems").hidden = true;
  $("timing").textContent = "";
  const audio = $("answer-audio");
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.removeAttribute("src");
  audio.hidden = true;
  delete audio.dataset.bytes;
}

// Plays PCM chunks back to back as they arrive and keeps them for the final WAV.
class StreamPlayer {
  constructor() {
    const Context = window.AudioContext || window.webkitAudioContext;
    this.ctx = Context ? new Context() : null;
    this.next = 0;
    this.chunks = [];
    this.sources = [];
    this.rate = 16000;
  }
  stop() { // an interrupted answer: what is scheduled and not yet heard is dropped
    for (const source of this.sources) { try { source.stop(); } catch (_) { /* already ended */ } }
    this.sources = [];
    this.next = 0;
  }
  push(pcm, rate) {
    this.rate = rate;
    this.chunks.push(pcm);
    if (!this.ctx || pcm.length === 0) return;
    const buffer = this.ctx.createBuffer(1, pcm.length, rate);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    this.next = Math.max(this.next, this.ctx.currentTime + 0.05);
    source.start(this.next);
    this.sources.push(source);
    this.next += buffer.duration;
  }
  wav() {
    const samples = this.chunks.reduce((n, c) => n + c.length, 0);
    const view = new DataView(new ArrayBuffer(44 + 2 * samples));
    const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
    text(0, "RIFF"); view.setUint32(4, 36 + 2 * samples, true); text(8, "WAVE");
    text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
    view.setUint32(24, this.rate, true); view.setUint32(28, 2 * this.rate, true);
    view.setUint16(32, 2, true); view.setUint16(34, 16, true);
    text(36, "data"); view.setUint32(40, 2 * samples, true);
    let offset = 44;
    for (const chunk of this.chunks) for (const v of chunk) { view.setInt16(offset, v, true); offset += 2; }
    return new Blob([view.buffer], { type: "audio/wav" });
  }
}

function decodePcm(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Int16Array(bytes.buffer, 0, bytes.length >> 1);
}

// One mark per chunk: "·" keep listening, "A" answer, "I" ignore (the frozen-LLM variant's state head).
const STATE_MARKS = { keep_listening: "·", answer: "A", ignore: "I" };

function addState(state, chunk) {
  const mark = document.createElement("span");
  mark.className = state;
  mark.textContent = STATE_MARKS[state] || "?";
  mark.title = `chunk ${chunk}: ${state.replace("_", " ")}`;
  $("states").appendChild(mark);
  $("states-row").hidden = false;
}

function describeListening(listening) {
  const ms = (s) => `${Math.round(1000 * s)} ms`;
  const parts = [];
  if (listening.forced) parts.push("no decision: answered at the end of the audio");
  else if (listening.outcome) parts.push(`${listening.outcome} at chunk ${listening.decision_chunk}`);
  else parts.push("no decision");
  const lat = listening.latencies;
  if (lat.decision_s != null) parts.push(`decision ${ms(lat.decision_s)} after the end of speech`);
  if (lat.first_token_s != null) parts.push(`first text token ${ms(lat.first_token_s)} after it`);
  return parts.join(" · ");
}

function handleEvent(event, player, turn) {
  if (event.type === "state") {
    addState(event.state, event.chunk);
  } else if (event.type === "transcript") {
    $("transcript").textContent = event.text;
    turn.transcript = event.text;
  } else if (event.type === "text") {
    $("answer").textContent = event.text;
    turn.text = event.text;
  } else if (event.type === "audio") {
    player.push(decodePcm(event.pcm16), event.sample_rate);
    $("status").textContent = "speaking…";
  } else if (event.type === "listening") {
    $("status").textContent = `listening (${event.at_s.toFixed(2)} s into the recording)…`;
  } else if (event.type === "interrupt") {
    player.stop();
    $("status").textContent = `interrupted after ${event.played_s.toFixed(2)} s: a new question`;
  } else if (event.type === "answered" || event.type === "ignored") {
    const item = document.createElement("li");
    item.textContent = event.type === "ignored" ? `${event.at_s.toFixed(2)} s: ignored`
      : `${event.at_s.toFixed(2)} s: ${event.result.text || "(no text)"}`;
    $("history").appendChild(item);
  } else if (event.type === "done") {
    finish(event.result, player, turn);
  } else if (event.type === "error") {
    showError(event.error);
  }
}

function finish(result, player, turn) {
  if (result.transcript != null) $("transcript").textContent = result.transcript;
  if (result.text != null) $("answer").textContent = result.text;
  if (result.problems && result.problems.length) {
    $("problems").textContent = "Problems: " + result.problems.join("; ");
    $("problems").hidden = false;
  }
  const parts = [`${result.units} units`, `total ${result.seconds_total.toFixed(2)} s`];
  if (result.seconds_to_first_audio != null) parts.unshift(`first audio after ${result.seconds_to_first_audio.toFixed(2)} s`);
  if (result.listening) parts.unshift(describeListening(result.listening));
  $("timing").textContent = parts.join(" · ");
  const audio = $("answer-audio");
  if (player.chunks.length) {
    const blob = player.wav();
    audio.src = URL.createObjectURL(blob);
    audio.dataset.bytes = String(blob.size);
    audio.hidden = false;
  }
  const item = document.createElement("li");
  item.textContent = `${turn.question || result.transcript || "(speech)"} → ${result.text || "(no text)"}`;
  $("history").appendChild(item);
}

async function submit(body, contentType, question) {
  if (busy) return;
  clearAnswer();
  setBusy(true, "waiting for the model…");
  const player = new StreamPlayer(); // created inside the click: browsers only let a gesture start audio
  const turn = { question };
  try {
    const duplex = $("duplex").checked && contentType !== "application/json";
    const url = duplex ? "/api/chat?duplex=1" : "/api/chat";
    const response = await fetch(url, { method: "POST", headers: { "Content-Type": contentType }, body });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      showError(message);
      return;
    }
    $("status").textContent = "answering…";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline).trim();
        pending = pending.slice(newline + 1);
        if (line) handleEvent(JSON.parse(line), player, turn);
      }
    }
  } catch (err) {
    showError(`request failed: ${err.message || err}`);
  } finally {
    setBusy(false, "");
  }
}

function sendText(event) {
  if (event) event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return showError("type a question first");
  if (text.length > limits.max_text_chars) return showError(`text too long: ${text.length} characters (limit ${limits.max_text_chars})`);
  submit(JSON.stringify({ text }), "application/json", text);
}

function sendAudio(blob, name) {
  if (blob.size > limits.max_upload_bytes) {
    const mb = (n) => (n / 1e6).toFixed(1);
    return showError(`upload too large: ${mb(blob.size)} MB (limit ${mb(limits.max_upload_bytes)} MB)`);
  }
  submit(blob, blob.type || "application/octet-stream", name);
}

let recorder = null;
async function toggleRecording() {
  if (recorder) { recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    return showError("recording needs a secure page (http://127.0.0.1 or https) in a browser with MediaRecorder");
  }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (err) {
    return showError(`microphone unavailable: ${err.message || err}`);
  }
  const parts = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    const blob = new Blob(parts, { type: recorder.mimeType || "audio/webm" });
    recorder = null;
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    sendAudio(blob, "(recording)");
  };
  recorder.start();
  $("record").textContent = "■ Stop and send";
  $("record").classList.add("recording");
  showError("");
}

async function reset() {
  const response = await fetch("/api/reset", { method: "POST" });
  if (!response.ok) return showError((await response.json()).error);
  $("history").replaceChildren();
  clearAnswer();
}

async function loadInfo() {
  try {
    const info = await (await fetch("/api/health")).json();
    limits = info.limits;
    const variant = info.variant === "frozen" ? " · frozen-LLM variant (answers in text)" : "";
    $("model").textContent = `model: ${info.model} · answers: ${info.mode}${variant}`;
    $("limits").textContent =
      `Audio up to ${limits.max_audio_s} s and ${(limits.max_upload_bytes / 1e6).toFixed(1)} MB; text up to ${limits.max_text_chars} characters.`;
  } catch (err) {
    $("model").textContent = "server unreachable";
  }
}

$("text-form").addEventListener("submit", sendText);
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) sendText(e); });
$("send-file").addEventListener("click", () => {
  const file = $("file").files[0];
  if (!file) return showError("choose an audio file first");
  sendAudio(file, file.name);
});
$("record").addEventListener("click", toggleRecording);
$("reset").addEventListener("click", reset);
loadInfo();
