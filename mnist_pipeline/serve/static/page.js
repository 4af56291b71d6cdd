// The drawing page: pointer events (mouse, pen, finger) draw white on black, as MNIST's digits are;
// each finished stroke sends the canvas as a PNG to /v1/predict; a wrong answer can be corrected,
// which stores the drawing with its right label (/v1/corrections). Nothing is loaded from elsewhere.
"use strict";

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const answer = document.getElementById("answer");
const results = document.getElementById("results");
const statusLine = document.getElementById("status");
const versionLine = document.getElementById("version");
let drawing = false;
let asked = 0;  // numbers the questions: an answer to an older drawing (or a cleared one) is dropped
let last = null;
let lastDrawing = null;  // the PNG the shown answer is about

function clearPad() {
  asked++;
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
  answer.hidden = true;
  lastDrawing = null;
  say("");
}

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function where(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width, y: (event.clientY - box.top) * pad.height / box.height };
}

function strokeTo(point) {
  ink.strokeStyle = "#fff";
  ink.lineWidth = 20;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(last.x, last.y);
  ink.lineTo(point.x, point.y);
  ink.stroke();
  last = point;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = where(event);
  strokeTo(last);  // a dot
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const move of (moves.length ? moves : [event])) strokeTo(where(move));
});
function endStroke() {
  if (!drawing) return;
  drawing = false;
  classify();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (error) {
    return response.statusText;
  }
}

function canvasPng() {
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

async function send(url, options) {
  try {
    return await fetch(url, options);
  } catch (error) {
    say(`The service does not answer (${error.message}); is it still running?`, true);
    return null;
  }
}

async function classify() {
  const question = ++asked;
  const png = await canvasPng();
  const response = await send("/v1/predict", { method: "POST", headers: { "Content-Type": "image/png" }, body: png });
  if (question !== asked || !response) return;
  if (!response.ok) {
    answer.hidden = true;
    say(await errorText(response), true);
    return;
  }
  const body = await response.json();
  lastDrawing = png;
  showTop(body.predictions[0].top);
  if (body.version !== shownVersion) showModel();  // production moved: show the new model's details
  say("");
}

function showTop(top) {
  results.replaceChildren(...top.map(({ class: digit, probability }) => {
    const row = document.createElement("li");
    row.dataset.digit = digit;
    row.innerHTML = '<span class="digit"></span><span class="track"><span class="bar"></span></span>' +
      '<span class="probability"></span>';
    row.querySelector(".digit").textContent = digit;
    row.querySelector(".bar").style.width = `${(probability * 100).toFixed(1)}%`;
    row.querySelector(".probability").textContent = probability < 0.001 ? "<0.1%" : `${(probability * 100).toFixed(1)}%`;
    return row;
  }));
  answer.hidden = false;
}

async function correct(label) {
  if (!lastDrawing) return;
  const form = new FormData();
  form.append("file", lastDrawing, "drawing.png");
  form.append("label", String(label));
  let response = await sendCorrection(form);
  if (response && response.status === 401) {  // a service reachable beyond loopback asks for its token
    const token = window.prompt("This service needs its corrections token to store a correction:");
    if (!token) return;
    sessionStorage.setItem("correctionsToken", token);
    response = await sendCorrection(form);
  }
  if (!response) return;
  if (!response.ok) {
    say(await errorText(response), true);
    return;
  }
  const body = await response.json();
  say(`Thank you: kept as a ${body.label} for review (${body.id}); once a person accepts it, the next training uses it.`);
}

function sendCorrection(form) {
  const token = sessionStorage.getItem("correctionsToken");
  return send("/v1/corrections", { method: "POST", body: form, headers: token ? { Authorization: `Bearer ${token}` } : {} });
}

let shownVersion = null;
async function showModel() {
  const response = await send("/v1/model");
  if (!response) return;
  const serving = (await response.json()).serving;
  shownVersion = serving ? serving.version : null;
  versionLine.textContent = serving
    ? `model: ${serving.version} (${serving.preset}, test accuracy ${serving.test_accuracy.toFixed(4)})`
    : "model: none loaded yet";
}

const labels = document.getElementById("labels");
for (let digit = 0; digit <= 9; digit++) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = digit;
  button.dataset.label = digit;
  button.addEventListener("click", () => correct(digit));
  labels.append(button);
}
document.getElementById("clear").addEventListener("click", clearPad);
clearPad();
showModel();
