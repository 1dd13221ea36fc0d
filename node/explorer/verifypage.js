// The proof page: the auditor's genesis file and a proof bundle (a file, or the bundle the
// node serves for a tx id), checked in this browser by verify.js. The node's answer is only
// input to the check, never its verdict.

import { hex } from "./crypto.js";
import { $, ApiRefusal, el, explain, facts } from "./dom.js";
import { InvalidGenesis, loadGenesis } from "./genesis.js";
import { BUNDLE_BYTES_MAX, verdict } from "./verify.js";

const GENESIS_FILE_BYTES_MAX = 4194304;
let fetched = null; // the bytes of a bundle fetched by tx id

// The verdict for a genesis text and bundle bytes: {valid, reason} or {valid, proven}.
export async function check(genesisText, bundleBytes) {
  let genesis;
  try {
    genesis = await loadGenesis(genesisText);
  } catch (error) {
    if (error instanceof InvalidGenesis) return { valid: false, reason: `genesis: ${error.message}` };
    throw error;
  }
  return verdict(bundleBytes, genesis);
}

async function readFile(input, limit, what) {
  const file = input.files[0];
  if (!file) throw new Error(`choose the ${what}`);
  if (file.size > limit) throw new Error(`the ${what} is larger than ${limit} bytes`);
  return new Uint8Array(await file.arrayBuffer());
}

async function onVerify() {
  $("verdict").textContent = "verifying…";
  $("verdict").className = "";
  $("proven").replaceChildren();
  try {
    const genesisBytes = await readFile($("genesis-file"), GENESIS_FILE_BYTES_MAX, "genesis file");
    const bundle = $("bundle-file").files[0]
      ? await readFile($("bundle-file"), BUNDLE_BYTES_MAX, "proof bundle") : fetched;
    if (!bundle) throw new Error("choose a proof bundle, or fetch the bundle of a tx id");
    const text = new TextDecoder("utf-8", { fatal: true }).decode(genesisBytes);
    show(await check(text, bundle));
  } catch (error) {
    $("verdict").textContent = `cannot verify: ${error.message}`;
  }
}

function show(result) {
  const line = $("verdict");
  line.className = result.valid ? "valid" : "invalid";
  if (!result.valid) {
    line.textContent = `INVALID: ${result.reason}`;
    return;
  }
  const { tx, block, index, outcome, anchor, changes, epoch } = result.proven;
  line.textContent = "VALID";
  $("proven").append(facts([
    ["tx id", el("code", {}, hex(tx.txId))],
    ["record", `${tx.key} (${tx.type}) by ${tx.clientId}`],
    ["block", `${block.header.height}, position ${index} of ${block.header.txCount}`],
    ["outcome", outcome ? `refused: ${outcome}` : "accepted"],
    ["certified by", `${block.signers.join(", ")} (the validators of epoch ${epoch})`],
    ["governance", changes ? `${changes} changes replayed from the genesis, each certified`
      : "none: the genesis alone judges this proof"],
    ["anchored in", anchor ? `the history of block ${anchor.header.height}, certified by ` +
      anchor.signers.join(", ") : "no later block (the bundle's block was the head)"],
  ]));
}

async function onFetch() {
  const txId = $("bundle-tx").value.trim().toLowerCase();
  $("verdict").className = "";
  $("verdict").textContent = "fetching the bundle…";
  try {
    if (!/^[0-9a-f]{64}$/.test(txId)) throw new Error("a tx id is 64 hex digits");
    const response = await fetch(`/v1/transactions/${txId}/proof`, { cache: "no-store" });
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (!response.ok) {
      let doc = { error: `http_${response.status}`, reason: "" };
      try {
        doc = JSON.parse(new TextDecoder().decode(bytes));
      } catch { /* the status says enough */ }
      throw new ApiRefusal(response.status, doc);
    }
    fetched = bytes;
    $("bundle-file").value = "";
    $("verdict").textContent = `bundle of ${txId.slice(0, 12)}… fetched (${bytes.length} bytes):` +
      " choose your genesis file and verify";
  } catch (error) {
    $("verdict").textContent = explain(error);
  }
}

export function prefill(txId) {
  $("bundle-tx").value = txId;
  return onFetch();
}

$("verify-button").addEventListener("click", onVerify);
$("bundle-fetch").addEventListener("click", onFetch);
