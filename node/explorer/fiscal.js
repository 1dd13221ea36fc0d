// The pages of records with rules: fund flows (budget lines, and the refusals by reason of a
// window of blocks the page names), risk alerts with their evidence, and claims by property
// and event. They read the node's routes for them (docs/protocol.md section 19) under the
// caller's identity.

import { $, api, ApiRefusal, el, explain, link, short, table } from "./dom.js";

export const REFUSAL_SCAN_BLOCKS = 256; // blocks the refusal counts cover at first, and add per step
export const CLAIMS_PAGES_MAX = 10; // record pages read for the claims page (1 000 each)
const RECORDS_PAGE = 1000;
const FETCH_PARALLEL = 8;

export function cents(value) {
  if (typeof value !== "number") return "—";
  const sign = value < 0 ? "-" : "";
  const abs = Math.abs(value);
  const units = Math.floor(abs / 100).toLocaleString("en-US");
  return `${sign}${units}.${String(abs % 100).padStart(2, "0")}`;
}

// Refusals by reason, counted in this page from the blocks themselves (their outcomes), over
// a window of heights the page states: the latest REFUSAL_SCAN_BLOCKS blocks when the page
// opens, REFUSAL_SCAN_BLOCKS older ones more each time the auditor asks, down to block 1.
// No node keeps totals over the whole chain; each step reads a bounded number of blocks.
async function countBlocks(span, low, high) {
  for (let top = high; top >= low; top -= FETCH_PARALLEL) {
    const heights = [];
    for (let h = top; h > top - FETCH_PARALLEL && h >= low; h--) heights.push(h);
    (await Promise.all(heights.map((h) => api(`/v1/blocks/${h}`)))).forEach((block) =>
      (block.outcomes ?? []).forEach((o) => {
        if (o.outcome !== "refused") return;
        span.counts.set(o.reason, (span.counts.get(o.reason) ?? 0) + 1);
      }));
  }
  span.floor = low;
}

// The refusals of the latest `step` blocks: {counts, floor, top}.
export async function latestRefusals(step = REFUSAL_SCAN_BLOCKS) {
  const top = (await api("/v1/blocks/latest")).height;
  const span = { counts: new Map(), floor: top + 1, top };
  await countBlocks(span, Math.max(1, top - step + 1), top);
  return span;
}

// The counts of `span`, the window they cover, and a button that adds `step` older blocks.
export function refusalTable(span, step = REFUSAL_SCAN_BLOCKS) {
  const rows = [...span.counts].sort((a, b) => b[1] - a[1]).map(([r, n]) => [r, String(n)]);
  const t = table(["reason", "refused txs"], rows);
  t.id = "refusals";
  const whole = span.floor === 1;
  const more = el("button", { type: "button", id: "refusals-more" },
    `count ${step} older blocks`);
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      await countBlocks(span, Math.max(1, span.floor - step), span.floor - 1);
      $("refusals-box").replaceWith(refusalTable(span, step));
    } catch (error) {
      more.replaceWith(el("p", {}, explain(error)));
    }
  });
  return el("div", { id: "refusals-box" },
    el("p", { id: "refusals-window" }, `Blocks ${span.floor} to ${span.top}`
      + (whole ? ": the whole chain as of block " + span.top : `: the latest ${span.top
        - span.floor + 1} blocks only; refusals in blocks below ${span.floor} are not in`
        + " these totals")
      + ". Counted in this page from each block's recorded outcomes."),
    t, whole ? null : more);
}

export async function showFunds() {
  const out = $("funds");
  out.replaceChildren();
  $("funds-status").textContent = "reading…";
  try {
    const prefix = $("funds-prefix").value.trim();
    const doc = await api(`/v1/budget?prefix=${encodeURIComponent(prefix)}`);
    const t = table(["budget line", "department", "fiscal year", "appropriated", "allocated",
      "spent", "remaining"], doc.lines.map((l) => [link(`#/record/${l.line}`, l.line),
      l.department ?? "—", String(l.fiscal_year ?? "—"), cents(l.appropriated),
      cents(l.allocated), cents(l.spent), cents(l.remaining)]));
    t.id = "budget-lines";
    out.append(t);
    $("funds-status").textContent = `${doc.lines.length} budget lines` +
      (doc.truncated ? " (the first 1 000: narrow the prefix)" : "");
    out.append(el("h3", {}, "Refusals by reason"));
    try {
      out.append(refusalTable(await latestRefusals()));
    } catch (error) {
      if (!(error instanceof ApiRefusal)) throw error;
      out.append(el("p", {}, `${explain(error)} (refusals are counted from blocks)`));
    }
  } catch (error) {
    $("funds-status").textContent = explain(error);
  }
}

let risksCursor = null;

export async function showRisks(more = false) {
  const out = $("risks");
  if (!more) {
    out.replaceChildren();
    risksCursor = null;
  }
  $("risks-status").textContent = "reading…";
  try {
    const kind = $("risks-kind").value;
    const query = new URLSearchParams();
    if (kind) query.set("kind", kind);
    if (risksCursor) query.set("cursor", risksCursor);
    const doc = await api(`/v1/risks?${query}`);
    const t = table(["kind", "height", "detail", "evidence"], doc.alerts.map((a) => [a.kind,
      link(`#/block/${a.height}`, String(a.height)), detailText(a.detail),
      el("span", {}, a.evidence.flatMap((e) => [link(`#/tx/${e}`, el("code", {}, short(e))), " "]))]));
    t.className = "risk-page";
    out.append(t);
    risksCursor = doc.next_cursor;
    $("risks-more").hidden = risksCursor === null;
    const shown = out.querySelectorAll(".risk-page tbody tr").length;
    $("risks-status").textContent = `${shown} alerts, oldest first`;
  } catch (error) {
    $("risks-more").hidden = true;
    $("risks-status").textContent = explain(error);
  }
}

function detailText(detail) {
  if (detail === null || detail === undefined) return "";
  return typeof detail === "string" ? detail : JSON.stringify(detail);
}

async function recordsOf(prefix, type) {
  const out = [];
  let cursor = null;
  for (let page = 0; page < CLAIMS_PAGES_MAX; page++) {
    const query = new URLSearchParams({ prefix, type, limit: String(RECORDS_PAGE) });
    if (cursor) query.set("cursor", cursor);
    const doc = await api(`/v1/records?${query}`);
    out.push(...doc.records);
    cursor = doc.next_cursor;
    if (!cursor) return { records: out, complete: true };
  }
  return { records: out, complete: false };
}

export async function showClaims() {
  const out = $("claims");
  out.replaceChildren();
  $("claims-status").textContent = "reading…";
  try {
    const claims = await recordsOf("claims/", "insurance.claim");
    let policies = new Map();
    try {
      const found = await recordsOf("policies/", "insurance.policy");
      policies = new Map(found.records.map((r) => [r.key, r.value]));
    } catch (error) {
      if (!(error instanceof ApiRefusal)) throw error;
    }
    const paid = new Map(); // claim key -> the accepted payouts' sum (refused ones change nothing)
    for (const p of (await recordsOf("claims/", "insurance.payout")).records) {
      paid.set(p.value.claim, (paid.get(p.value.claim) ?? 0) + p.value.amount_cents);
    }
    const groups = new Map();
    for (const c of claims.records) {
      const property = policies.get(c.value.policy)?.property_id ?? "(policy not readable)";
      const group = `${property} / ${c.value.event_id}`;
      if (!groups.has(group)) groups.set(group, []);
      groups.get(group).push(c);
    }
    for (const [group, list] of [...groups].sort()) {
      const insurers = new Set(list.map((c) => c.key.split("/")[1]));
      out.append(el("h3", {}, `${group}: ${list.length} claims, ${insurers.size} insurers`),
        table(["claim", "policy", "peril", "loss", "claimed", "paid", "tx"], list.map((c) => [
          link(`#/record/${c.key}`, c.key), c.value.policy, c.value.peril,
          cents(c.value.loss_cents), cents(c.value.claimed_cents), cents(paid.get(c.key) ?? 0),
          link(`#/tx/${c.tx_id}`, el("code", {}, short(c.tx_id)))])));
    }
    $("claims-status").textContent = `${claims.records.length} claims in ${groups.size} ` +
      `property and event groups${claims.complete ? "" : " (the first pages only)"}`;
  } catch (error) {
    $("claims-status").textContent = explain(error);
  }
}
