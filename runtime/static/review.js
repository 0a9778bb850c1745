// The review page of wbc-edge. Every number shown comes from the server (runtime/results.py),
// which recomputes the differential after each action; this script only draws and sends keys.
// Names from files, cards and people are set with textContent, never parsed as HTML.
"use strict";

let state = null;
let order = []; // cell ids in gallery order
let focusId = null;
let busy = false;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function classNames() {
  return state.classes.map((c) => c.name);
}

async function load() {
  const response = await fetch("/api/state");
  state = await response.json();
  draw();
}

async function post(path, payload) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function draw() {
  document.getElementById("sample").textContent = state.sample;
  const confirmed = state.cells.filter((c) => c.confirmed).length;
  const who = state.operator ? `operator ${state.operator}` : "no operator given (--operator)";
  document.getElementById("status").textContent =
    `${confirmed} of ${state.cells.length} cells confirmed; ${who}; changes are saved at once`;
  drawLegend();
  drawGallery();
  drawDifferential();
  if (!focusId || !order.includes(focusId)) focusId = order[0] || null;
  setFocus(focusId);
}

function drawLegend() {
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  classNames().forEach((name, i) => {
    if (i < 9) legend.append(el("li", {}, `${i + 1}: ${name}`));
  });
  legend.append(el("li", { value: "0" }, `0: ${state.excluded} (not a cell)`));
}

function drawGallery() {
  const gallery = document.getElementById("gallery");
  gallery.replaceChildren();
  order = [];
  const groups = [...classNames(), state.excluded];
  for (const name of groups) {
    const cells = state.cells.filter((c) => c.label === name);
    if (!cells.length) continue;
    // Cells that need a look first (least confident first), then the rest as they came.
    const unsure = cells.filter((c) => c.needs_review).sort((a, b) => a.prob - b.prob);
    const rest = cells.filter((c) => !c.needs_review);
    const section = el("section", { class: "group", "data-class": name });
    const done = cells.filter((c) => c.confirmed).length;
    section.append(el("h3", {}, `${name} (${cells.length}; ${done} confirmed)`));
    const box = el("div", { class: "cells" });
    for (const cell of [...unsure, ...rest]) {
      order.push(cell.id);
      const kind = cell.confirmed ? "confirmed" : cell.needs_review ? "review" : "auto";
      const tile = el("div", {
        class: `tile ${kind}`,
        id: `cell-${cell.id}`,
        "data-cell": cell.id,
        "data-label": cell.label,
      });
      tile.append(el("img", { src: `/files/cells/${cell.id}.jpg`, alt: cell.label }));
      const said = cell.confirmed && cell.label !== cell.predicted ? ` (model: ${cell.predicted})` : "";
      tile.append(el("div", { class: "cap" }, `${cell.label} ${cell.prob.toFixed(2)} ${kind}${said}`));
      tile.addEventListener("click", () => setFocus(cell.id));
      box.append(tile);
    }
    section.append(box);
    gallery.append(section);
  }
}

function row(cells, attrs) {
  const tr = el("tr", attrs || {});
  for (const c of cells) tr.append(el("td", {}, String(c)));
  return tr;
}

function drawDifferential() {
  const verified = state.verified;
  const pre = state.differential;
  const body = document.querySelector("#verified tbody");
  body.replaceChildren();
  for (const name of Object.keys(pre.wbc)) {
    const v = verified.wbc[name];
    const p = pre.wbc[name];
    body.append(
      row([name, v.count, v.percent.toFixed(1), p.count, p.percent.toFixed(1)], {
        "data-class": name,
        class: "row",
      }),
    );
  }
  body.append(
    row(["WBC", verified.wbc_counted, verified.wbc_counted ? "100.0" : "-", pre.wbc_counted,
      pre.wbc_counted ? "100.0" : "-"], { class: "total", id: "wbc-total" }),
  );
  const apart = document.querySelector("#apart tbody");
  apart.replaceChildren(
    row(["nucleated red cells (confirmed)", `${verified.nrbc} (${verified.nrbc_per_100_wbc.toFixed(1)} per 100 WBC)`], { id: "nrbc" }),
    row(["platelets (confirmed)", verified.platelets], { id: "platelets" }),
    row(["artefacts", verified.excluded], { id: "excluded" }),
    row(["not yet confirmed", verified.not_confirmed], { id: "not-confirmed" }),
  );
  const target = pre.target ? ` of a target of ${pre.target}` : "";
  document.getElementById("progress").textContent =
    `${verified.wbc_counted} WBC confirmed${target}; the pre-classified count has ${pre.wbc_counted}, with ${pre.in_review} cells under review`;
  const flags = document.getElementById("flags");
  flags.replaceChildren();
  for (const flag of state.flags) {
    const div = el("div", { class: "flag", "data-rule": flag.rule }, flag.message);
    div.title = `${flag.cells.length} cells: click to go to the first`;
    div.addEventListener("click", () => setFocus(flag.cells[0]));
    flags.append(div);
  }
}

function setFocus(id) {
  document.querySelectorAll(".tile.focused").forEach((t) => t.classList.remove("focused"));
  focusId = id;
  const cell = state.cells.find((c) => c.id === id);
  const info = document.getElementById("focus-info");
  if (!cell) {
    info.textContent = "no cells in this sample";
    return;
  }
  const tile = document.getElementById(`cell-${id}`);
  if (tile) {
    tile.classList.add("focused");
    tile.scrollIntoView({ block: "nearest" });
  }
  document.getElementById("focus-crop").src = `/files/cells/${id}.jpg`;
  const fieldImg = document.getElementById("focus-field-img");
  const boxEl = document.getElementById("focus-box");
  const field = cell.field ? state.fields[cell.field] : null;
  if (field) {
    fieldImg.src = `/files/fields/${cell.field}.jpg`;
    const [x1, y1, x2, y2] = cell.box;
    Object.assign(boxEl.style, {
      display: "block",
      left: `${(100 * x1) / field.width}%`,
      top: `${(100 * y1) / field.height}%`,
      width: `${(100 * (x2 - x1)) / field.width}%`,
      height: `${(100 * (y2 - y1)) / field.height}%`,
    });
  } else {
    fieldImg.src = `/files/cells/${id}.jpg`; // crops mode: the image is the cell
    boxEl.style.display = "none";
  }
  const top3 = cell.top3.map(([n, p]) => `${n} ${p.toFixed(2)}`).join(", ");
  const why = cell.ood ? "out of distribution" : cell.uncertain ? "low confidence" : "";
  const status = cell.confirmed ? `confirmed as ${cell.label}` : cell.needs_review ? `under review (${why})` : "pre-classified";
  const where = cell.file ? `${cell.file} #${cell.index}` : `frame ${cell.frame} #${cell.index}`;
  info.textContent = `${where}: model ${cell.predicted} (${top3}); ${status}`;
}

async function act(action, label) {
  if (!focusId || busy) return;
  busy = true;
  const at = order.indexOf(focusId);
  const next = order[at + 1] || order[at - 1] || focusId;
  try {
    state = await post("/api/correct", { cell: focusId, action, class: label });
    focusId = action === "reset" ? focusId : next;
    draw();
  } catch (error) {
    document.getElementById("status").textContent = `not saved: ${error.message}`;
  } finally {
    busy = false;
  }
}

function move(step) {
  const at = order.indexOf(focusId);
  const to = Math.min(order.length - 1, Math.max(0, at + step));
  setFocus(order[to]);
}

function nextUnconfirmed() {
  const at = order.indexOf(focusId);
  const rest = [...order.slice(at + 1), ...order.slice(0, at + 1)];
  const id = rest.find((i) => !state.cells.find((c) => c.id === i).confirmed);
  if (id) setFocus(id);
}

document.addEventListener("keydown", (event) => {
  if (!state || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  const names = classNames();
  if (key === "ArrowRight" || key === "l") move(1);
  else if (key === "ArrowLeft" || key === "h") move(-1);
  else if (key === "n") nextUnconfirmed();
  else if (key === "Enter" || key === " ") act("confirm");
  else if (key === "u") act("reset");
  else if (key === "0") act("reclassify", state.excluded);
  else if (/^[1-9]$/.test(key) && Number(key) <= names.length) act("reclassify", names[Number(key) - 1]);
  else return;
  event.preventDefault();
});

document.getElementById("export").addEventListener("click", async () => {
  try {
    const result = await post("/api/export", {});
    const counts = Object.entries(result.counts).map(([k, v]) => `${k} ${v}`).join(", ");
    document.getElementById("exported").textContent = `exported to ${result.folder}: ${counts || "nothing confirmed yet"}`;
  } catch (error) {
    document.getElementById("exported").textContent = `export failed: ${error.message}`;
  }
});

load();
