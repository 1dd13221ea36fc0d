// The explorer's reading pages: the chain overview, blocks (list, search, detail), a tx, and a
// record's history. Every read goes through the node's API under the same access rules as the
// CLI's: what the signed-in identity may read, or the public namespaces for a visitor.

import { $, api, ApiRefusal, el, explain, facts, link, recordPath, short, table, time }
  from "./dom.js";

export const BLOCKS_LISTED = 10;
const FETCH_PARALLEL = 8;
export const HEALTH_BLOCKS = 64; // the recent heights whose votes the overview shows

let names = null; // validator index -> id, from /v1/status

async function validatorNames() {
  if (names === null) {
    const status = await api("/v1/status");
    names = new Map([[status.index, status.node_id], ...status.peers.map((p) => [p.index, p.id])]);
  }
  return names;
}

function nameOf(index) {
  return names?.get(index) ?? `#${index}`;
}

export async function showOverview() {
  const out = $("overview");
  out.replaceChildren();
  $("overview-status").textContent = "reading…";
  try {
    const status = await api("/v1/status");
    await validatorNames();
    let head = null;
    try {
      head = status.height > 0 ? await api("/v1/blocks/latest") : null;
    } catch (error) {
      if (!(error instanceof ApiRefusal)) throw error;
    }
    const votes = status.height > 0 ? await api(`/v1/votes?limit=${HEALTH_BLOCKS}`) : null;
    out.append(overviewFacts(status, head), validatorTable(status, votes),
      votes ? el("p", { id: "health-window" }, `Votes of heights ${votes.from} to ${votes.to}`
        + ` as ${status.node_id} saw them (it keeps the votes of heights from ${votes.kept_from}`
        + " on; a certificate keeps a quorum of them). View changes: the signed requests for a "
        + "higher view this node received from each validator since it started.")
        : el("p", {}, "No block is committed yet."));
    $("overview-status").textContent = "ok";
  } catch (error) {
    $("overview-status").textContent = explain(error);
  }
}

function overviewFacts(status, head) {
  const margin = status.quorum.reachable - status.quorum.needed;
  return facts([
    ["chain id", el("span", { id: "ov-chain" }, status.chain_id)],
    ["genesis hash", el("code", { id: "ov-genesis" }, status.genesis_hash)],
    ["epoch", el("span", { id: "ov-epoch" }, String(status.epoch))],
    ["view", el("span", { id: "ov-view" }, String(status.view))],
    ["primary", `${nameOf(status.primary)} (validator ${status.primary})`
      + (status.in_view_change ? ", view change in progress" : "")],
    ["head height", el("span", { id: "ov-height" }, String(status.height))],
    ["head hash", el("code", {}, status.head_hash)],
    ["head time", head ? time(head.header.timestamp_ms)
      : "blocks are for validators and auditors: not shown to this identity"],
    ["quorum", `${status.quorum.reachable} validators reachable, ${status.quorum.needed} needed `
      + `(margin ${margin})`],
    ["this node", `${status.node_id}: ${status.ready ? "ready" : `not ready (${status.not_ready})`}`
      + (status.catching_up ? ", catching up" : "")],
    ["mempool", `${status.mempool} pending, room for ${status.mempool_free}`],
  ]);
}

function validatorTable(status, votes) {
  const of = new Map((votes?.validators ?? []).map((v) => [v.id, v])); // ids: indices move
  const seen = (votes?.heights ?? []).filter((h) => h.seen).length;
  const health = (id) => {
    const v = of.get(id);
    if (!v) return ["—", "—", "—", "—"];
    return [v.last_vote === null ? "none" : String(v.last_vote), `${v.missed} of ${seen}`,
      String(v.not_kept), v.last_view_change === null ? String(v.view_changes)
        : `${v.view_changes} (last to view ${v.last_view_change})`];
  };
  const rows = [[String(status.index), status.node_id, "this node", status.ready ? "up" : "not ready",
    "—", ...health(status.node_id)]];
  for (const p of status.peers) {
    rows.push([String(p.index), p.id, p.url, p.up ? "up" : "down", String(p.queued),
      ...health(p.id)]);
  }
  rows.sort((a, b) => Number(a[0]) - Number(b[0]));
  const t = table(["index", "validator", "reached at", "state", "messages queued",
    "last vote", "votes missed", "votes no certificate kept", "view changes"], rows);
  t.id = "validators";
  return t;
}

// --- Blocks ----------------------------------------------------------------------------------

function blockRow(block) {
  const row = el("tr", { "data-height": String(block.height) },
    el("td", {}, link(`#/block/${block.height}`, String(block.height))),
    el("td", {}, time(block.header.timestamp_ms)),
    el("td", {}, String(block.header.tx_count)),
    el("td", {}, String(block.header.view)),
    el("td", {}, block.proposer_id ?? nameOf(block.header.proposer)),
    el("td", {}, block.certificate.signers.join(", ")),
    el("td", {}, el("code", {}, short(block.hash))));
  return row;
}

async function blocksAt(heights) {
  const out = [];
  for (let i = 0; i < heights.length; i += FETCH_PARALLEL) {
    const part = heights.slice(i, i + FETCH_PARALLEL);
    out.push(...(await Promise.all(part.map((h) => api(`/v1/blocks/${h}`)))));
  }
  return out;
}

export async function showBlocks() {
  const body = $("blocks-body");
  $("blocks-status").textContent = "reading…";
  try {
    await validatorNames();
    const latest = await api("/v1/blocks/latest");
    const heights = [];
    for (let h = latest.height - 1; h >= 1 && heights.length < BLOCKS_LISTED - 1; h--) {
      heights.push(h);
    }
    const rows = [latest, ...(await blocksAt(heights))].map(blockRow);
    body.replaceChildren(...rows);
    $("blocks-status").textContent = `latest ${latest.height}; new blocks appear as they commit`;
  } catch (error) {
    body.replaceChildren();
    $("blocks-status").textContent = explain(error);
  }
}

// A block committed while the list is open (from the event stream); the list stays bounded.
export async function addLiveBlock(height) {
  const body = $("blocks-body");
  if (body.querySelector(`tr[data-height="${height}"]`)) return;
  try {
    const [block] = await blocksAt([height]);
    body.prepend(blockRow(block));
    while (body.rows.length > BLOCKS_LISTED * 5) body.lastElementChild.remove();
  } catch (error) {
    $("blocks-status").textContent = explain(error);
  }
}

export async function search(text) {
  const query = text.trim().toLowerCase();
  if (/^[0-9]{1,19}$/.test(query)) return `#/block/${query}`;
  if (!/^[0-9a-f]{64}$/.test(query)) {
    throw new Error("enter a height, or a block hash or tx id (64 hex digits)");
  }
  try {
    await api(`/v1/transactions/${query}`);
    return `#/tx/${query}`;
  } catch (error) {
    if (!(error instanceof ApiRefusal) || error.status !== 404) throw error;
  }
  try {  // the node's index of every block hash: the whole chain, however long
    return `#/block/${(await api(`/v1/blocks/${query}`)).height}`;
  } catch (error) {
    if (!(error instanceof ApiRefusal) || error.status !== 404) throw error;
  }
  throw new Error("no tx with that id and no block with that hash is committed on this node");
}

export async function showBlock(height) {
  const out = $("block-detail");
  out.replaceChildren();
  $("block-title").textContent = `Block ${height}`;
  $("block-status").textContent = "reading…";
  try {
    await validatorNames();
    const block = await api(`/v1/blocks/${encodeURIComponent(height)}`);
    const h = block.header;
    const outcomes = block.outcomes ?? null;
    out.append(
      facts([
        ["hash", el("code", { id: "block-hash" }, block.hash)],
        ["previous", h.height > 1 ? link(`#/block/${h.height - 1}`, el("code", {}, h.prev_hash))
          : el("code", {}, `${h.prev_hash} (the genesis)`)],
        ["time", time(h.timestamp_ms)], ["view", String(h.view)],
        ["proposer", `${block.proposer_id ?? nameOf(h.proposer)} (validator ${h.proposer}`
          + ` of epoch ${block.epoch})`],
        ["tx root", el("code", {}, h.tx_root)], ["history root", el("code", {}, h.history_root)],
        ...(h.outcome_root ? [["outcome root", el("code", {}, h.outcome_root)]] : []),
      ]),
      el("h3", {}, `Commit certificate (view ${block.certificate.view})`),
      signersTable(block.certificate),
      el("h3", {}, `Transactions (${h.tx_count})`),
      txTable(block.txs, outcomes));
    $("block-status").textContent = "ok";
  } catch (error) {
    $("block-status").textContent = explain(error);
  }
}

function signersTable(cert) {
  const t = table(["validator", "index", "signature"], cert.votes.map((v) =>
    [v.validator_id, String(v.validator), el("code", {}, short(v.signature))]));
  t.id = "signers";
  return t;
}

function outcomeText(outcome) {
  if (!outcome) return "accepted (this block format records no outcomes)";
  return outcome.outcome === "refused" ? `refused: ${outcome.reason}` : outcome.outcome;
}

function txTable(txs, outcomes) {
  const t = table(["#", "tx id", "client", "record", "type", "outcome"], txs.map((tx, i) => [
    String(i), link(`#/tx/${tx.tx_id}`, el("code", {}, short(tx.tx_id))), tx.client_id,
    link(`#/record/${tx.key}`, tx.key), tx.type, outcomeText(outcomes?.[i])]));
  t.id = "block-txs";
  return t;
}

// --- A transaction, a record's history ---------------------------------------------------------

export async function showTx(txId) {
  const out = $("tx-detail");
  out.replaceChildren();
  $("tx-status").textContent = "reading…";
  try {
    const doc = await api(`/v1/transactions/${encodeURIComponent(txId)}`);
    const pairs = [["tx id", el("code", {}, doc.tx_id)], ["status", doc.status]];
    if (doc.status === "committed") {
      pairs.push(["block", link(`#/block/${doc.height}`, `${doc.height}, position ${doc.index}`)]);
      if (doc.outcome) pairs.push(["outcome", doc.reason ? `${doc.outcome}: ${doc.reason}` : doc.outcome]);
      pairs.push(["client", doc.tx.client_id], ["record", link(`#/record/${doc.tx.key}`, doc.tx.key)],
        ["type", doc.tx.type], ["time", time(doc.tx.timestamp_ms)],
        ["body", el("pre", {}, JSON.stringify(doc.tx.body, null, 2))]);
    }
    out.append(facts(pairs));
    if (doc.status === "committed") {
      out.append(link(`#/verify/${doc.tx_id}`, "Verify its proof in this browser"));
    }
    $("tx-status").textContent = "ok";
  } catch (error) {
    $("tx-status").textContent = explain(error);
  }
}

let historyCursor = null;

export async function showHistory(key, more = false) {
  const out = $("history");
  if (!more) {
    out.replaceChildren();
    historyCursor = null;
  }
  $("history-key").value = key;
  $("history-status").textContent = "reading…";
  try {
    const query = historyCursor ? `?cursor=${historyCursor}` : "";
    const page = await api(recordPath("history", key) + query);
    const rows = page.versions.map((v) => [
      link(`#/block/${v.height}`, String(v.height)), String(v.index),
      link(`#/tx/${v.tx_id}`, el("code", {}, short(v.tx_id))), v.client_id, v.type,
      time(v.timestamp_ms), el("pre", {}, JSON.stringify(v.value))]);
    const t = table(["height", "#", "tx id", "client", "type", "time", "value"], rows);
    t.className = "history-page";
    out.append(t);
    historyCursor = page.next_cursor;
    $("history-more").hidden = !page.truncated;
    const shown = out.querySelectorAll(".history-page tbody tr").length;
    $("history-status").textContent = `${shown} versions of ${key}, oldest first`;
  } catch (error) {
    $("history-more").hidden = true;
    $("history-status").textContent = explain(error);
  }
}
