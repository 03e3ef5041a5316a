// modelport console: polls the /ui/api routes (one request at a time, every poll_ms, paused
// while the tab is hidden) and calls the admin API for actions. No dependencies.
"use strict";
(() => {
  const ROOT = document.body.dataset.root || "";
  const $ = (id) => document.getElementById(id);
  const keys = {
    api: sessionStorage.getItem("modelport.api") || "",
    admin: sessionStorage.getItem("modelport.admin") || "",
  };
  const view = { page: "models", model: "", feature: "", summary: null, pollMs: 2000 };
  let timer = null;

  // --- small helpers -------------------------------------------------------------------
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const num = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
    : Number(v).toFixed(d);
  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(2) + " %";
  const when = (t) => new Date(typeof t === "number" ? t * 1000 : t).toLocaleTimeString();
  const badge = (s) => `<span class="badge ${esc(s)}">${esc(s)}</span>`;
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  function setOptions(select, values, keep = true) {
    // rewrite a <select> only when its options change, keeping the user's choice
    const old = [...select.options].map((o) => o.value);
    if (same(old, values)) return;
    const chosen = select.value;
    select.innerHTML = values.map((v) => `<option>${esc(v)}</option>`).join("");
    if (keep && values.includes(chosen)) select.value = chosen;
  }

  async function api(path) {
    const headers = {};
    const key = keys.api || keys.admin;
    if (key) headers["X-API-Key"] = key;
    const res = await fetch(ROOT + path, { headers, cache: "no-store" });
    const body = await res.json().catch(() => ({ error: res.statusText }));
    if (!res.ok) throw Object.assign(new Error(body.error || res.statusText), { status: res.status });
    return body;
  }

  async function admin(method, path, payload) {
    const headers = { "Content-Type": "application/json" };
    if (keys.admin) headers.Authorization = "Bearer " + keys.admin;
    const res = await fetch(ROOT + path, {
      method, headers, body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    const text = await res.text();
    let body = {};
    try { body = text ? JSON.parse(text) : {}; } catch { body = { error: text }; }
    return { ok: res.ok, status: res.status, body };
  }

  function notice(text) { $("notice").textContent = text || ""; }

  // --- pages ---------------------------------------------------------------------------
  function show(page) {
    view.page = page;
    for (const b of document.querySelectorAll(".tab")) {
      if (b.dataset.page === page) b.setAttribute("aria-current", "page");
      else b.removeAttribute("aria-current");
    }
    for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
    history.replaceState(null, "", "#" + page);
    poll(true);
  }

  function renderModels(sum) {
    const html = sum.models.map((m) => {
      const aliases = Object.entries(m.aliases).map(([a, v]) => `${esc(a)} → ${esc(v)}`)
        .join(", ") || '<span class="muted">none</span>';
      const rows = m.versions.map((v) => `<tr>
        <td><strong>${esc(v.version)}</strong>${v.version === m.default ? " (default)" : ""}</td>
        <td>${badge(v.ready ? "ready" : "not-ready")}</td><td>${esc(v.flavor)}</td>
        <td>${esc(v.runtime)}${v.compressed ? " (compressed)" : ""}</td><td>${esc(v.device)}</td>
        <td class="mono" title="${esc(v.sha256)}">${esc((v.sha256 || "–").slice(0, 16))}</td>
        <td>${when(v.loaded_at)}</td></tr>`).join("");
      const sig = m.versions.find((v) => v.version === m.default) || m.versions[0];
      const feats = sig ? sig.signature.features.map((f) => `<tr><td>${esc(f.name)}</td>
        <td>${esc(f.dtype)}</td><td>${f.categories ? esc(f.categories.join(", ")) : ""}</td>
        <td>${f.nullable ? "yes" : "no"}</td></tr>`).join("") : "";
      const policy = m.traffic ? m.traffic.arms.map((a) => `${esc(a.name || a.version)}: ${esc(a.version)} × ${a.weight}`).join(", ") : "default version only";
      return `<div class="card models-card" data-model="${esc(m.name)}">
        <h2>${esc(m.name)} <small>serving ${esc(m.default)}</small></h2>
        <p>aliases: ${aliases} · registered: ${esc(m.registered.join(", ") || "–")}
          · traffic: ${policy}${m.refused ? ` · ${badge("refused")} ${esc(m.refused.version)}: ${esc(m.refused.message)}` : ""}</p>
        <table><thead><tr><th>version</th><th>state</th><th>flavor</th><th>runtime</th>
          <th>device</th><th>package sha256</th><th>loaded</th></tr></thead><tbody>${rows}</tbody></table>
        ${sig ? `<h3>Signature <small>${esc(sig.signature.task)}${sig.signature.classes ? ", classes " + esc(sig.signature.classes.join(", ")) : ""}</small></h3>
        <table><thead><tr><th>feature</th><th>type</th><th>categories</th><th>nullable</th></tr></thead>
          <tbody>${feats}</tbody></table>` : ""}</div>`;
    }).join("");
    const box = $("models");
    if (box.dataset.html !== html) { box.innerHTML = html; box.dataset.html = html; }
  }

  function modelFacts() {
    return (view.summary && view.summary.models.find((m) => m.name === view.model)) || null;
  }

  function renderRollout(r) {
    const m = modelFacts();
    const colors = ["#2f6fb3", "#e07b39", "#4a9d5b", "#8e5ab5", "#c44e52", "#5f6b7a"];
    let policy = `<p>No traffic policy: every request goes to the default version
      <strong>${esc(r.default)}</strong>.</p>`;
    if (r.policy) {
      const total = r.policy.arms.reduce((s, a) => s + a.weight, 0) || 1;
      const bar = r.policy.arms.map((a, i) => `<span style="width:${100 * a.weight / total}%;background:${colors[i % 6]}" title="${esc(a.name || a.version)}">${esc(a.name || a.version)} ${num(100 * a.weight / total, 1)}%</span>`).join("");
      policy = `<div class="weights">${bar}</div><table><tbody>
        ${r.policy.arms.map((a) => `<tr><td>arm <strong>${esc(a.name || a.version)}</strong></td><td>version ${esc(a.version)}</td><td class="num">weight ${a.weight}</td></tr>`).join("")}
        <tr><td>canary step</td><td colspan="2">${r.canary_percent === null ? "–" : num(r.canary_percent, 1) + " %"}</td></tr>
        <tr><td>shadow</td><td colspan="2">${esc(r.policy.shadow.join(", ") || "–")}</td></tr>
        <tr><td>sticky key</td><td colspan="2">${esc(r.policy.sticky_header || "–")}</td></tr></tbody></table>`;
    }
    $("policy").innerHTML = policy;
    $("arms").tBodies[0].innerHTML = r.arms.map((a) => `<tr><td>${esc(a.arm)}</td>
      <td>${esc(a.version)}</td><td class="num">${num(a.rps, 1)}</td><td class="num">${num(a.p50_ms)}</td>
      <td class="num">${num(a.p99_ms)}</td><td class="num">${pct(a.error_rate)}</td></tr>`).join("")
      || '<tr><td colspan="6" class="muted">no requests in the last 10 s</td></tr>';
    $("shadows").innerHTML = r.shadows.length ? `<h3>Shadow <small>last 60 s</small></h3>
      <table><thead><tr><th>version</th><th>rows compared</th><th>disagreement rate</th></tr></thead><tbody>
      ${r.shadows.map((s) => `<tr><td>${esc(s.version)}</td><td class="num">${s.rows}</td><td class="num">${pct(s.rate)}</td></tr>`).join("")}</tbody></table>` : "";
    $("history").tBodies[0].innerHTML = r.history.map((h) => `<tr><td>${when(h.at)}</td>
      <td>${esc(h.alias)}</td><td>${esc(h.from_version || "–")}</td><td>${esc(h.to_version)}</td>
      <td>${esc(h.kind)}</td><td>${esc(h.actor || "")}</td><td>${esc(h.reason || "")}</td></tr>`).join("")
      || '<tr><td colspan="7" class="muted">no alias moves recorded (not served from a registry?)</td></tr>';
    // action controls: rewritten only when what they offer changes
    const registered = (m && m.registered.length) ? m.registered : r.served;
    const aliases = m ? Object.keys(m.aliases) : [];
    setOptions($("alias-version"), registered);
    $("alias-names").innerHTML = aliases.map((a) => `<option value="${esc(a)}">`).join("");
    if (!$("alias-name").value && aliases.length) $("alias-name").value = aliases[0];
    setOptions($("rollback-alias"), aliases);
    const candidates = r.served.filter((v) => v !== r.default);
    setOptions($("canary-version"), candidates.length ? candidates : r.served);
    const canaryTo = $("canary-to");
    if (canaryTo.dataset.at !== String(r.canary_percent) && document.activeElement !== canaryTo) {
      canaryTo.value = nextStep(r.canary_percent);  // the policy moved: offer the next step
      canaryTo.dataset.at = String(r.canary_percent);
    }
    setOptions($("weights-shadow"), ["", ...r.served]);
    const inputs = r.served.map((v) => `<label>${esc(v)} <input type="number" min="0" step="any" size="4" data-version="${esc(v)}"></label>`).join("");
    const box = $("weights");
    const policyKey = JSON.stringify(r.policy) + r.default;
    if (box.dataset.versions !== r.served.join(",")) {
      box.innerHTML = inputs;
      box.dataset.versions = r.served.join(",");
      box.dataset.policy = "";
    }
    if (box.dataset.policy !== policyKey && !box.contains(document.activeElement)) {
      box.dataset.policy = policyKey;  // the policy moved: show its weights
      for (const input of box.querySelectorAll("input")) {
        const arm = r.policy && r.policy.arms.find((a) => a.version === input.dataset.version);
        input.value = arm ? arm.weight : (input.dataset.version === r.default ? 100 : 0);
      }
    }
  }

  function nextStep(current) {
    const steps = [1, 5, 10, 25, 50, 100];
    if (current === null || current === undefined) return 5;
    return steps.find((s) => s > current + 1e-9) ?? 100;
  }

  function svgBars(h) {
    const W = 560, H = 200, pad = 28, n = h.labels.length;
    const tot = (xs) => xs.reduce((s, x) => s + x, 0) || 1;
    const rt = tot(h.reference), ct = tot(h.current);
    const ref = h.reference.map((c) => c / rt), cur = h.current.map((c) => c / ct);
    const top = Math.max(...ref, ...cur, 0.01);
    const bw = (W - pad) / n;
    let bars = "";
    for (let i = 0; i < n; i += 1) {
      const x = pad + i * bw;
      const rh = (H - 52) * ref[i] / top, ch = (H - 52) * cur[i] / top;
      bars += `<rect x="${x + 2}" y="${H - 30 - rh}" width="${bw / 2 - 2}" height="${rh}" fill="var(--ref)"><title>${esc(h.labels[i])}: reference ${(100 * ref[i]).toFixed(1)}%</title></rect>`;
      bars += `<rect x="${x + bw / 2}" y="${H - 30 - ch}" width="${bw / 2 - 2}" height="${ch}" fill="var(--cur)"><title>${esc(h.labels[i])}: current ${(100 * cur[i]).toFixed(1)}%</title></rect>`;
      if (n <= 16 || i % Math.ceil(n / 16) === 0) {
        bars += `<text x="${x + bw / 2}" y="${H - 16}" text-anchor="middle">${esc(h.labels[i].slice(0, 9))}</text>`;
      }
    }
    return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="Histogram of ${esc(h.feature)}: reference and current window">
      <line x1="${pad}" y1="${H - 30}" x2="${W}" y2="${H - 30}" stroke="#999"/>
      <text x="0" y="12">${(100 * top).toFixed(0)}%</text>${bars}
      <rect x="${W - 170}" y="4" width="10" height="10" fill="var(--ref)"/><text x="${W - 155}" y="13">reference</text>
      <rect x="${W - 90}" y="4" width="10" height="10" fill="var(--cur)"/><text x="${W - 75}" y="13">current</text></svg>`;
  }

  function svgTrend(trend, feature, th) {
    const W = 560, H = 160, pad = 30;
    const pts = trend.map((p) => p.scores[feature]).map((v) => (v === null || v === undefined) ? 0 : v);
    if (!pts.length) return '<p class="muted">no periodic evaluation yet</p>';
    const top = Math.max(...pts, th.alert || 0.25) * 1.1;
    const x = (i) => pad + (pts.length === 1 ? 0 : i * (W - pad - 10) / (pts.length - 1));
    const y = (v) => H - 20 - (H - 30) * v / top;
    const line = pts.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    const dots = trend.map((p, i) => `<circle cx="${x(i)}" cy="${y(pts[i])}" r="3" class="${esc(p.status)}" fill="${p.status === "alert" ? "#b3261e" : p.status === "warn" ? "#b26a00" : "#2f6fb3"}"><title>${when(p.t)}: ${esc(feature)} ${num(pts[i], 3)} (model ${esc(p.status)})</title></circle>`).join("");
    const rule = (v, c, label) => `<line x1="${pad}" x2="${W}" y1="${y(v)}" y2="${y(v)}" stroke="${c}" stroke-dasharray="4 3"/><text x="${W - 40}" y="${y(v) - 3}">${label}</text>`;
    return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="Drift score of ${esc(feature)} over recent evaluations">
      <text x="0" y="12">${num(top, 2)}</text>${rule(th.warn, "#b26a00", "warn")}${rule(th.alert, "#b3261e", "alert")}
      <polyline points="${line}" fill="none" stroke="#2f6fb3" stroke-width="2"/>${dots}
      <text x="${pad}" y="${H - 4}">${when(trend[0].t)}</text><text x="${W - 60}" y="${H - 4}">${when(trend[trend.length - 1].t)}</text></svg>`;
  }

  function renderDrift(d) {
    const acc = d.accuracy;
    $("accuracy").textContent = !acc ? "Needs the prediction log (MODELPORT_LOG_DB) and labels sent to /feedback."
      : acc.error ? acc.error
      : acc.labeled ? `${num(100 * acc.accuracy, 1)} % of ${acc.labeled} labeled predictions (${acc.correct} right)`
      : "No labels yet: send them to POST /feedback with the request id.";
    if (!d.enabled) {
      $("drift-status").textContent = d.reason;
      $("features").tBodies[0].innerHTML = "";
      $("hist").innerHTML = ""; $("trend").innerHTML = "";
      return;
    }
    const rep = d.report;
    $("drift-status").innerHTML = `Model ${esc(rep.model)}:${esc(rep.version)} ${badge(rep.status)}
      over ${rep.window_rows} rows in the window (${rep.total_rows} since start; tests need ${rep.thresholds.min_rows}),
      evaluated ${when(d.evaluated)}.`;
    const chosen = d.histogram ? d.histogram.feature : "";
    view.feature = chosen;
    const rows = [...rep.features, ...rep.predictions].map((f) => `<tr class="${f.name === chosen ? "chosen" : ""}" data-feature="${esc(f.name)}">
      <td><button type="button" class="feature" data-feature="${esc(f.name)}">${esc(f.name)}</button></td>
      <td>${badge(f.status)}</td><td class="num">${num(f.score, 3)} <small>${esc(f.method)}</small></td>
      <td class="num">${f.p_value === null ? "–" : Number(f.p_value).toExponential(2)} (${f.p_adjusted === null ? "–" : Number(f.p_adjusted).toExponential(2)})</td>
      <td class="num">${f.window}</td></tr>`).join("");
    const body = $("features").tBodies[0];
    if (body.dataset.html !== rows) {
      const focused = document.activeElement && document.activeElement.dataset
        ? document.activeElement.dataset.feature : undefined;
      body.innerHTML = rows; body.dataset.html = rows;
      if (focused) { const again = body.querySelector(`button[data-feature="${CSS.escape(focused)}"]`); if (again) again.focus(); }
    }
    $("hist-title").textContent = chosen ? `Histogram: ${chosen}` : "Histogram";
    $("hist").innerHTML = d.histogram ? svgBars(d.histogram) : "";
    $("trend").innerHTML = chosen ? svgTrend(d.trend, chosen, rep.thresholds) : "";
  }

  function renderPredictions(p) {
    $("pred-note").textContent = p.enabled ? `${p.rows.length} latest logged rows`
      : "The prediction log is off: start the server with MODELPORT_LOG_DB=sqlite:///predictions.db.";
    $("predictions").tBodies[0].innerHTML = p.rows.map((r) => `<tr><td>${when(r.ts)}</td>
      <td>${esc(r.model)}</td><td>${esc(r.version)}</td><td>${esc(r.arm || "–")}</td>
      <td class="num">${num(1000 * r.latency_s, 2)}</td><td>${esc(JSON.stringify(r.outputs.prediction))}</td>
      <td>${r.label === null || r.label === undefined ? "–" : esc(JSON.stringify(r.label))}</td>
      <td class="mono">${esc(JSON.stringify(r.inputs)).slice(0, 160)}</td><td class="mono">${esc(r.request_id)}</td></tr>`).join("");
  }

  // --- polling -------------------------------------------------------------------------
  async function refresh() {
    const sum = await api("/ui/api/summary");
    view.summary = sum;
    view.pollMs = sum.server.poll_ms || 2000;
    const names = sum.models.map((m) => m.name);
    for (const sel of document.querySelectorAll(".model-select")) setOptions(sel, names);
    setOptions($("pred-model"), ["", ...names]);
    if (!names.includes(view.model)) view.model = names[0] || "";
    for (const sel of document.querySelectorAll(".model-select")) sel.value = view.model;
    if (view.page === "models") renderModels(sum);
    if (!view.model) return;
    const model = encodeURIComponent(view.model);
    if (view.page === "rollout") renderRollout(await api(`/ui/api/models/${model}/rollout`));
    if (view.page === "drift") {
      const f = view.feature ? `?feature=${encodeURIComponent(view.feature)}` : "";
      renderDrift(await api(`/ui/api/models/${model}/drift${f}`));
    }
    if (view.page === "predictions") {
      const q = new URLSearchParams();
      for (const [k, id] of [["model", "pred-model"], ["version", "pred-version"], ["arm", "pred-arm"], ["limit", "pred-limit"]]) {
        if ($(id).value) q.set(k, $(id).value);
      }
      renderPredictions(await api(`/ui/api/predictions?${q}`));
    }
  }

  async function poll(now) {
    clearTimeout(timer);
    if (!now && document.visibilityState === "hidden") { timer = setTimeout(poll, view.pollMs); return; }
    try {
      await refresh();
      if (!$("notice").dataset.sticky) notice("");
    } catch (err) {
      notice(err.status === 401 || err.status === 403
        ? `${err.message} — enter a key above.` : `The server did not answer: ${err.message}`);
    }
    timer = setTimeout(poll, view.pollMs);
  }

  // --- actions -------------------------------------------------------------------------
  function confirmDialog(text) {
    return new Promise((resolve) => {
      const dlg = $("confirm");
      $("confirm-text").textContent = text;
      dlg.returnValue = "";
      dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
      dlg.showModal();
      $("confirm-ok").focus();
    });
  }

  function result(kind, text) {
    const box = $("action-result");
    box.className = kind;
    box.textContent = text;
  }

  async function act(question, method, path, payload, passed) {
    if (!(await confirmDialog(question))) { result("", "Cancelled."); return; }
    result("", "Working… (the golden check runs first)");
    const res = await admin(method, path, payload);
    if (res.ok) result("ok", passed(res.body));
    else if (res.status === 409) result("refused", `Refused by the server (409): ${res.body.error}`);
    else result("refused", `The server answered ${res.status}: ${res.body.error || ""}`);
    poll(true);
  }

  const base = () => `/admin/models/${encodeURIComponent(view.model)}`;

  function followText(body) {
    const f = body.follow;
    if (!f) return "";
    const ev = f.event;
    if (ev && ev.outcome === "failed") return `\nThis server could not switch: ${ev.error}`;
    return `\nThis server now serves ${f.serving}.`;
  }

  $("act-alias").addEventListener("submit", (e) => {
    e.preventDefault();
    const alias = $("alias-name").value, version = $("alias-version").value;
    const m = modelFacts();
    const from = m && m.aliases[alias] ? ` from ${m.aliases[alias]}` : "";
    const reason = $("alias-reason").value;
    act(`Move ${view.model}@${alias}${from} to ${version}? The server checks ${version} on its golden rows first.`,
      "PUT", `${base()}/aliases/${encodeURIComponent(alias)}`,
      reason ? { version, reason } : { version },
      (b) => `Golden check passed: ${view.model}:${version} answered its golden rows. ${view.model}@${alias} → ${b.move.to_version} (${b.move.kind}).${followText(b)}`);
  });

  $("act-rollback").addEventListener("submit", (e) => {
    e.preventDefault();
    const alias = $("rollback-alias").value;
    act(`Roll ${view.model}@${alias} back to the version it pointed to before? The golden check runs first.`,
      "POST", `${base()}/aliases/${encodeURIComponent(alias)}/rollback`, {},
      (b) => `Golden check passed. ${view.model}@${alias} rolled back ${b.move.from_version} → ${b.move.to_version}.${followText(b)}`);
  });

  $("act-canary").addEventListener("submit", (e) => {
    e.preventDefault();
    const to = Number($("canary-to").value), candidate = $("canary-version").value;
    const facts = modelFacts();
    const current = facts && facts.traffic;
    let policy;
    if (current && current.arms.some((a) => a.name === "canary")) {
      const others = current.arms.filter((a) => a.name !== "canary");
      const rest = others.reduce((s, a) => s + a.weight, 0);
      policy = { ...current, arms: current.arms.map((a) => ({ ...a,
        weight: a.name === "canary" ? to : (100 - to) * (rest > 0 ? a.weight / rest : 1 / others.length) })) };
    } else {
      policy = { arms: [{ version: candidate, weight: to, name: "canary" },
        { version: facts ? facts.default : "", weight: 100 - to, name: "stable" }] };
    }
    const target = policy.arms.find((a) => a.name === "canary").version;
    act(`Send ${to} % of ${view.model}'s traffic to the canary ${target}? The golden check runs first.`,
      "PUT", `${base()}/traffic`, policy,
      () => `Golden check passed for ${target}. Canary now at ${to} %.`);
  });

  $("act-weights").addEventListener("submit", (e) => {
    e.preventDefault();
    const arms = [...$("weights").querySelectorAll("input")]
      .map((i) => ({ version: i.dataset.version, weight: Number(i.value || 0) }))
      .filter((a) => a.weight > 0);
    const shadow = $("weights-shadow").value, sticky = $("weights-sticky").value;
    const policy = { arms, shadow: shadow ? [shadow] : [], sticky_header: sticky || null };
    const text = arms.map((a) => `${a.version}=${a.weight}`).join(", ");
    act(`Set ${view.model}'s traffic to ${text || "(no arm)"}${shadow ? `, shadow ${shadow}` : ""}${sticky ? `, sticky on ${sticky}` : ""}? Every new version passes the golden check first.`,
      "PUT", `${base()}/traffic`, policy, () => `Golden check passed. Traffic: ${text}.`);
  });

  $("clear-policy").addEventListener("click", () => {
    act(`Remove ${view.model}'s traffic policy? Every request then goes to the default version.`,
      "DELETE", `${base()}/traffic`, undefined, () => "Policy removed: the default version answers.");
  });

  // --- wiring --------------------------------------------------------------------------
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.page));
  for (const sel of document.querySelectorAll(".model-select")) {
    sel.addEventListener("change", () => { view.model = sel.value; view.feature = ""; poll(true); });
  }
  $("features").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-feature]");
    if (b) { view.feature = b.dataset.feature; poll(true); }
  });
  $("pred-filter").addEventListener("submit", (e) => { e.preventDefault(); poll(true); });
  $("keys").addEventListener("submit", (e) => {
    e.preventDefault();
    keys.api = $("api-key").value.trim();
    keys.admin = $("admin-key").value.trim();
    sessionStorage.setItem("modelport.api", keys.api);
    sessionStorage.setItem("modelport.admin", keys.admin);
    notice(keys.api || keys.admin ? "Keys set for this tab." : "Keys cleared.");
    poll(true);
  });
  $("api-key").value = keys.api;
  $("admin-key").value = keys.admin;
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") poll(true); });
  const first = location.hash.slice(1);
  show(["models", "rollout", "drift", "predictions"].includes(first) ? first : "models");
})();
