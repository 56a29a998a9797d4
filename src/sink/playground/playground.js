// The playground page: evaluates the rule file over the log lines as the user types (debounced)
// through POST /-/playground/eval, and shows the loaded rule files from /-/playground/teams.
"use strict";

const EXAMPLE_RULES = `team: web
rules:
  - name: requests
    format: text
    match: {contains: HTTP/}
    extract:
      grok: '%{IP:client} - - \\[%{HTTPDATE}\\] "%{WORD:method} %{NOTSPACE:path} HTTP/%{NUMBER}" %{INT:status} %{INT:bytes:int}'
    metrics:
      - name: http_requests_total
        type: counter
        labels: {method: method, status: status}
      - name: http_response_bytes_total
        type: counter
        value: bytes
    then: drop
`;
const EXAMPLE_INPUT = `10.0.0.1 - - [26/Nov/2026:18:00:01 +0000] "GET /api/users HTTP/1.1" 200 512
10.0.0.2 - - [26/Nov/2026:18:00:02 +0000] "POST /api/login HTTP/1.1" 401 64
10.0.0.1 - - [26/Nov/2026:18:00:03 +0000] "GET /api/users HTTP/1.1" 200 498
worker 3 restarted after panic: index out of range
`;

const $ = (id) => document.getElementById(id);
const rules = $("rules"), input = $("input");
// `edits` counts changes; #status's data-pending is "0" once the evaluation of the latest
// edit is shown (what a test waits for).
let seq = 0, shown = 0, timer = null, edits = 0;

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}

// The mirror behind a textarea holds the same text, line by line, so a line or a column can be
// marked under the text the user types.
function paint(area, mirror, gutter, marks) {
  const lines = area.value.split("\n");
  let m = "", g = "";
  lines.forEach((text, i) => {
    const n = i + 1, mark = marks(n);
    let body = esc(text);
    if (mark && mark.col && mark.col <= text.length + 1) {
      const c = mark.col - 1;
      body = esc(text.slice(0, c)) + '<span class="col">' + (esc(text.slice(c, c + 1)) || " ") + "</span>" + esc(text.slice(c + 1));
    }
    m += `<span class="line${mark ? " " + mark.cls : ""}" data-line="${n}">${body || " "}</span>`;
    g += mark && mark.gutter ? `<span class="${mark.gutter}" title="${esc(mark.title || "")}">${n}</span>\n` : n + "\n";
  });
  mirror.innerHTML = m;
  gutter.innerHTML = g;
  area.style.height = "auto";
  area.style.height = area.scrollHeight + "px";
  area.style.width = "100%";
  area.style.width = Math.max(area.scrollWidth, area.parentElement.clientWidth) + "px";
}

let lastDiags = [], lastDecisions = [], lastLines = [];

function paintRules() {
  const byLine = {};
  for (const d of lastDiags) {
    if (d.file !== "rules.yaml" || d.severity === "note") continue;
    const cur = byLine[d.line];
    if (!cur || (cur.severity !== "error" && d.severity === "error")) byLine[d.line] = d;
  }
  paint(rules, $("rules-mirror"), $("rules-gutter"), (n) => {
    const d = byLine[n];
    if (!d) return null;
    return {cls: d.severity, col: d.col, gutter: d.severity === "error" ? "err" : "warn", title: d.message};
  });
}

function paintInput() {
  // Blank lines are not events: number the events as the server does.
  const fate = {};
  let k = 0;
  input.value.split("\n").forEach((l, i) => {
    if (l.replace(/\r$/, "") !== "") { fate[i + 1] = lastDecisions[k]; k++; }
  });
  paint(input, $("input-mirror"), $("input-gutter"), (n) => {
    const f = fate[n];
    if (!f) return null;
    return {cls: f.startsWith("keep") ? "keep" : f.startsWith("drop") ? "drop" : "dead"};
  });
}

function showDiagnostics(diags) {
  const ul = $("diagnostics");
  const shownDiags = diags.filter((d) => d.severity !== "note");
  if (!shownDiags.length) {
    ul.innerHTML = '<li class="none">no problems in rules.yaml</li>';
    return;
  }
  ul.innerHTML = shownDiags.map((d) =>
    `<li class="${d.severity}" data-line="${d.line}" data-col="${d.col}" data-code="${esc(d.code)}">` +
    `${esc(d.file)}:${d.line}:${d.col}: ${d.severity}[${esc(d.code)}]: ${esc(d.message)}` +
    (d.hint ? `<span class="hint">hint: ${esc(d.hint)}</span>` : "") + "</li>").join("");
}

function jumpTo(line, col) {
  const lines = rules.value.split("\n");
  let at = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) at += lines[i].length + 1;
  at += Math.max(0, col - 1);
  rules.focus();
  rules.setSelectionRange(at, at);
}

$("diagnostics").addEventListener("click", (e) => {
  const li = e.target.closest("li[data-line]");
  if (li) jumpTo(+li.dataset.line, +li.dataset.col);
});

function showEvents(out) {
  const rows = out.events.map((ev, i) => {
    const decision = out.decisions[i] || "";
    const cls = decision.startsWith("keep") ? "keep" : decision.startsWith("drop") ? "drop" : "dead";
    const rules = ev.rules.map((r) => r.matched
      ? `<div class="rule"><span class="yes">✓</span> ${esc(r.rule)} ${Object.entries(r.fields).map(([k, v]) => `${esc(k)}=${esc(JSON.stringify(v))}`).join(" ")}</div>`
      : `<div class="rule"><span class="no">✗ ${esc(r.rule)}: ${esc(r.why_not)}</span></div>`).join("");
    const series = Object.entries(ev.series).map(([s, v]) => `<div class="rule">${esc(s)} +${v}</div>`).join("");
    const format = ev.format ? ev.format : "not decoded: " + ev.decode_error;
    const reduction = ev.reduction ? `<div class="rule">reduce ${esc(ev.reduction)}</div>` : "";
    return `<tr data-event="${i + 1}"><td>${i + 1}</td><td class="${cls}">${esc(decision)}</td>` +
      `<td><div class="rule">${esc(format)}</div>${rules}${series}${reduction}</td></tr>`;
  });
  document.querySelector("#events tbody").innerHTML = rows.join("");
}

async function evaluate() {
  const mine = ++seq, at = edits;
  $("status").textContent = "evaluating…";
  let res;
  try {
    res = await fetch("/-/playground/eval", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({rules: rules.value, input: input.value}),
    });
  } catch (e) {
    $("status").textContent = "the server did not answer: " + e;
    return;
  }
  if (res.status === 429) {
    // Another evaluation is running (another tab, or a slow one of ours): try again shortly.
    if (mine === seq) setTimeout(evaluate, 200);
    return;
  }
  const text = await res.text();
  if (mine < shown) return;
  shown = mine;
  if (!res.ok) {
    $("status").textContent = `error ${res.status}: ${text}`;
    return;
  }
  const out = JSON.parse(text);
  const refused = $("refused");
  if (out.refused) {
    refused.hidden = false;
    refused.textContent = out.refused;
    $("status").textContent = "refused";
    return;
  }
  refused.hidden = !out.truncated;
  refused.textContent = out.truncated || "";
  lastDiags = out.diagnostics;
  lastDecisions = out.decisions;
  showDiagnostics(out.diagnostics);
  $("series").textContent = out.exposition.split("\n").filter((l) => !l.startsWith("#")).join("\n") || "(no series)";
  showEvents(out);
  paintRules();
  paintInput();
  const errors = out.diagnostics.filter((d) => d.severity === "error").length;
  $("status").textContent = `${out.rules} rule(s), ${out.lines} line(s), ${errors} error(s), ${out.took_ms} ms`;
  $("status").dataset.seq = String(mine);
  if (mine === seq && at === edits) $("status").dataset.pending = "0";
}

function changed() {
  edits++;
  $("status").dataset.pending = "1";
  paintRules();
  paintInput();
  clearTimeout(timer);
  timer = setTimeout(evaluate, 250);
}

rules.addEventListener("input", changed);
input.addEventListener("input", changed);
rules.addEventListener("keydown", (e) => {
  // A tab in YAML is an error; the key indents with spaces instead of leaving the editor.
  if (e.key === "Tab") {
    e.preventDefault();
    document.execCommand("insertText", false, "  ");
  }
});

async function loadTeams() {
  const out = await (await fetch("/-/playground/teams")).json();
  const pct = (x) => (100 * x).toFixed(2) + "%";
  $("teams-summary").textContent = `rule set ${out.hash}` +
    (out.events !== undefined ? `, ${out.events} events read` : "") +
    (out.telemetry ? "" : " (self-telemetry is off: no counts)") +
    (out.dead_lettered !== undefined ? `, ${out.dead_lettered} dead-lettered` : "") +
    (Object.keys(out.dead_letters).length ? " (undecodable: " + Object.entries(out.dead_letters).map(([k, v]) => `${k} ${v}`).join(", ") + ")" : "");
  if (out.shadow) {
    const a = document.createElement("a");
    a.href = "/-/shadow";
    a.textContent = "candidate rules run beside these: their comparison";
    $("teams-summary").append(" — ", a);
  }
  const bytes = (n) => n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
  const budgets = (f) => {
    const b = f.budgets || {};
    const parts = [];
    if (b.series !== undefined) parts.push(`series ${f.team_series ?? "–"} / ${b.series}`);
    if (b.cpu_ms !== undefined) parts.push(`CPU ${b.cpu_ms} ms/s per rule`);
    if (b.kept_bytes !== undefined) parts.push(`kept ${bytes(b.kept_bytes)}/s per partition`);
    return parts.length ? `<p class="budgets">budgets: ${esc(parts.join(", "))}</p>` : "";
  };
  const reduced = (r) => {
    if (!r.reduction) return "–";
    const e = r.reduction.events, b = r.reduction.bytes;
    const removed = Object.entries(e).filter(([k]) => !["in", "kept", "protected"].includes(k));
    const fewer = b.in ? ` (${pct(1 - (b.kept || 0) / b.in)} fewer bytes)` : "";
    return `${e.in ?? 0} in, ${e.kept ?? 0} kept${fewer}` +
      (removed.length ? "; " + removed.map(([k, v]) => `${esc(k)} ${v}`).join(", ") : "");
  };
  $("teams").innerHTML = out.files.map((f) =>
    `<div class="file" data-file="${esc(f.file)}"><h3>${esc(f.team || "(no rules)")} — ${esc(f.file)} <span class="hash">${esc(f.hash || "")}</span></h3>` +
    budgets(f) +
    `<table><thead><tr><th>rule</th><th>matches</th><th>match rate</th><th>cost</th><th>series / cap</th><th>reduction</th><th>quarantined</th><th>value errors</th></tr></thead><tbody>` +
    f.rules.map((r) => `<tr><td class="rule">${esc(r.rule)}</td><td>${r.matches ?? "–"}</td>` +
      `<td>${r.match_rate !== undefined ? pct(r.match_rate) : "–"}</td>` +
      `<td>${r.us_per_event !== undefined ? r.us_per_event.toFixed(2) + " µs/event" : "–"}</td><td>` +
      r.families.map((m) => `<div class="rule${m.series >= m.max_series ? " over" : ""}">${esc(m.name)} ${m.series} / ${m.max_series}` +
        (m.overflowed ? ` (${m.overflowed} updates overflowed)` : "") + "</div>").join("") + "</td>" +
      `<td>${reduced(r)}</td>` +
      `<td class="${r.quarantines ? "over" : ""}">${r.quarantines ? `${r.quarantines} times, ${r.quarantined_events ?? 0} events skipped` : "–"}</td><td>` +
      Object.entries(r.value_errors).map(([k, v]) => `${esc(k)} ${v}`).join(", ") + "</td></tr>").join("") +
    "</tbody></table></div>").join("") || "<p>no rule files loaded</p>";
}

for (const b of document.querySelectorAll(".tab")) {
  b.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === b);
    $("view-try").hidden = b.dataset.view !== "try";
    $("view-teams").hidden = b.dataset.view !== "teams";
    if (b.dataset.view === "teams") loadTeams();
  });
}

rules.value = EXAMPLE_RULES;
input.value = EXAMPLE_INPUT;
changed();
