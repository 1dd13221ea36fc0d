// The explorer's proof verifier: a proof bundle (docs/protocol.md section 14) checked against
// the genesis file the auditor holds, in this page, with WebCrypto and this code alone. It
// asks the node nothing: the node that served the bundle is not trusted. Every check follows
// section 14.3 in its order and the first failure is the reason; the verdicts are those of
// the reference verifier (`cityledger verify-proof`), which the test suite compares.

import {
  DIGEST_BYTES, DOMAIN, INCLUSION_PROOF_HASHES_MAX, SIGNATURE_BYTES, bytesEqualTo, fromHex,
  sha256, verifyEd25519, verifyInclusion,
} from "./crypto.js";
import { mayWrite } from "./genesis.js";
import { Malformed, decode, decodeLoose, encode } from "./msgpack.js";

export const BUNDLE_BYTES_MAX = 4194304;
const HEIGHT_MAX = 2n ** 63n - 1n;
const TX_BYTES_MAX = 20480;
const BODY_BYTES_MAX = 16384;
const BODY_DEPTH_MAX = 8;
const BODY_ITEMS_MAX = 1024;
const ID_BYTES_MAX = 64;
const KEY_BYTES_MAX = 256;
const TYPE_BYTES_MAX = 64;
const TIMESTAMP_MS_MAX = 2n ** 53n;
const HEADER_BYTES_MAX = 256;
const VALIDATORS_MAX = 64;
const CERTIFICATE_BYTES_MAX = 128 + VALIDATORS_MAX * (SIGNATURE_BYTES + 8);
const BLOCK_TXS_MAX = 10000;
const KEY = /^[A-Za-z0-9._:-]+(\/[A-Za-z0-9._:-]+)*$/;
const TYPE = /^[A-Za-z][A-Za-z0-9._-]*$/;
const CHECKPOINT_FIELDS = ["block_hash", "certificate", "header", "height", "history_root"];
const BUNDLE_FIELDS = ["anchor", "block_hash", "certificate", "chain_id", "format",
  "genesis_hash", "header", "height", "index", "tx", "tx_count", "tx_id", "tx_proof"];
const REASONS = ["schema", "unknown_reference", "over_appropriation", "over_allocation",
  "duplicate_payment", "blocked_payee", "fiscal_year_closed", "policy_inactive",
  "peril_not_covered", "over_coverage", "over_loss", "invalid_transition", "not_owner",
  "not_admin", "not_voter", "duplicate_proposal", "unknown_proposal", "already_approved",
  "expired", "not_pending", "conflict", "not_in_force", "revoked", "key_rotated"];
// The bundle formats this verifier reads, with their header (version 2 commits to the txs'
// outcomes; version 1 bundles, from before outcomes, are refused as the reference does;
// version 3 adds the governance changes the proof depends on, section 14.5).
export const FORMATS = {
  "cityledger-proof-bundle/2": { headerVersion: 2n, headerItems: 10, outcome: true },
  "cityledger-proof-bundle/3": {
    headerVersion: 2n, headerItems: 10, outcome: true, governance: true,
  },
};
// Governance blocks a version 3 bundle may carry (section 14.5).
const GOVERNANCE_BLOCKS_MAX = 1024;

export class InvalidProof extends Error {}

const utf8 = new TextEncoder();
const fail = (reason) => {
  throw new InvalidProof(reason);
};

// --- Reading a bundle file ---------------------------------------------------------------

// A strict JSON reader: no field twice, integers only (as BigInt), like the reference's.
class Json {
  constructor(text) {
    this.text = text;
    this.pos = 0;
  }

  ws() {
    while (/[ \t\n\r]/.test(this.text[this.pos] ?? "")) this.pos++;
  }

  value(depth) {
    if (depth > 64) fail("not JSON: nested too deeply");
    this.ws();
    const c = this.text[this.pos];
    if (c === "{") return this.object(depth);
    if (c === "[") return this.array(depth);
    if (c === '"') return this.string();
    const m = /^(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false|null)/.exec(
      this.text.slice(this.pos, this.pos + 400));
    if (!m) fail(`not JSON: unexpected input at ${this.pos}`);
    this.pos += m[0].length;
    if (m[0] === "true" || m[0] === "false") return m[0] === "true";
    if (m[0] === "null") return null;
    if (m[3] || m[4]) fail(`the number ${m[0]} is not an integer`);
    return BigInt(m[0]);
  }

  string() {
    const m = /^"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/.exec(
      this.text.slice(this.pos));
    if (!m) fail(`not JSON: a bad string at ${this.pos}`);
    this.pos += m[0].length;
    return JSON.parse(m[0]);
  }

  object(depth) {
    this.pos++;
    const out = new Map();
    this.ws();
    if (this.text[this.pos] === "}") { this.pos++; return out; }
    for (;;) {
      this.ws();
      if (this.text[this.pos] !== '"') fail("not JSON: expected a field name");
      const key = this.string();
      this.ws();
      if (this.text[this.pos++] !== ":") fail("not JSON: expected ':'");
      if (out.has(key)) fail(`the field ${JSON.stringify(key)} appears twice`);
      out.set(key, this.value(depth + 1));
      this.ws();
      const c = this.text[this.pos++];
      if (c === "}") return out;
      if (c !== ",") fail("not JSON: expected ',' or '}'");
    }
  }

  array(depth) {
    this.pos++;
    const out = [];
    this.ws();
    if (this.text[this.pos] === "]") { this.pos++; return out; }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.text[this.pos++];
      if (c === "]") return out;
      if (c !== ",") fail("not JSON: expected ',' or ']'");
    }
  }
}

// The map of a bundle file's bytes, JSON or MessagePack (section 14.1).
export function parseBundle(bytes) {
  if (bytes.length > BUNDLE_BYTES_MAX) fail(`larger than ${BUNDLE_BYTES_MAX} bytes`);
  let value;
  if (bytes.length && ((bytes[0] >= 0x80 && bytes[0] <= 0x8f) || bytes[0] >= 0xde && bytes[0] <= 0xdf)) {
    try {
      value = decodeLoose(bytes);
    } catch (error) {
      if (!(error instanceof Malformed)) throw error;
      fail(`not MessagePack: ${error.message}`);
    }
  } else {
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      fail("not JSON: not UTF-8");
    }
    const reader = new Json(text);
    value = reader.value(0);
    reader.ws();
    if (reader.pos !== text.length) fail("not JSON: extra data");
  }
  if (!(value instanceof Map)) fail("not a proof bundle: expected an object");
  return value;
}

// --- Field access (section 14.1) -----------------------------------------------------------

function fields(doc, names, where) {
  if (!(doc instanceof Map)) fail(`${where}: expected an object`);
  const keys = [...doc.keys()];
  const unknown = keys.filter((k) => !names.includes(k)).sort();
  const missing = names.filter((k) => !doc.has(k)).sort();
  if (unknown.length) fail(`${where} has an unknown field ${JSON.stringify(unknown[0])}`);
  if (missing.length) fail(`${where} lacks the field ${JSON.stringify(missing[0])}`);
  return doc;
}

function bytesField(doc, name, length = null) {
  const value = doc.get(name);
  const raw = value instanceof Uint8Array ? value : fromHex(value);
  if (raw === null) fail(`${name}: expected bytes (lowercase hex in JSON)`);
  if (length !== null && raw.length !== length) {
    fail(`${name}: expected ${length} bytes, found ${raw.length}`);
  }
  return raw;
}

function intField(doc, name, low, high) {
  const value = doc.get(name);
  if (typeof value !== "bigint" || value < BigInt(low) || value > BigInt(high)) {
    fail(`${name}: expected an integer in [${low}, ${high}]`);
  }
  return value;
}

function hashes(doc, name) {
  const value = doc.get(name);
  if (!Array.isArray(value) || value.length > INCLUSION_PROOF_HASHES_MAX) {
    fail(`${name}: expected a list of at most ${INCLUSION_PROOF_HASHES_MAX} hashes`);
  }
  return value.map((v) => bytesField(new Map([[name, v]]), name, DIGEST_BYTES));
}

// --- Decoding the hashed parts (sections 4.1, 7.1, 9.2) --------------------------------------

function expectInt(v, low, high, what) {
  if (typeof v !== "bigint" || v < BigInt(low) || v > BigInt(high)) {
    throw new Malformed(`${what}: expected an integer in [${low}, ${high}]`);
  }
  return v;
}

function expectStr(v, maxBytes, what) {
  if (typeof v !== "string" || !v || utf8.encode(v).length > maxBytes) {
    throw new Malformed(`${what}: expected a non-empty string of at most ${maxBytes} bytes`);
  }
  return v;
}

function expectBytes(v, length, what) {
  if (!(v instanceof Uint8Array) || v.length !== length) {
    throw new Malformed(`${what}: expected ${length} bytes`);
  }
  return v;
}

function expectList(v, length, what) {
  if (!Array.isArray(v) || v.length !== length) {
    throw new Malformed(`${what}: expected an array of ${length} items`);
  }
  return v;
}

function checkPlain(value, depth) {
  if (depth > BODY_DEPTH_MAX) throw new Malformed(`body: nested deeper than ${BODY_DEPTH_MAX}`);
  const items = value instanceof Map ? [...value.values()] : Array.isArray(value) ? value : null;
  if (items === null) return;
  if (items.length > BODY_ITEMS_MAX) throw new Malformed(`body: more than ${BODY_ITEMS_MAX}`);
  for (const item of items) checkPlain(item, depth + 1);
}

function decodeTx(raw) {
  if (raw.length > TX_BYTES_MAX) fail(`tx: ${raw.length} bytes, the limit is ${TX_BYTES_MAX}`);
  try {
    const items = expectList(decode(raw, TX_BYTES_MAX), 9, "transaction");
    expectInt(items[0], 1, 1, "version");
    const tx = {
      chainId: expectStr(items[1], ID_BYTES_MAX, "chain_id"),
      clientId: expectStr(items[2], ID_BYTES_MAX, "client_id"),
      nonce: expectInt(items[3], 0, 2n ** 64n - 1n, "nonce"),
      timestampMs: expectInt(items[4], 0, TIMESTAMP_MS_MAX, "timestamp_ms"),
      key: expectStr(items[5], KEY_BYTES_MAX, "key"),
    };
    if (!KEY.test(tx.key) || tx.key.split("/").some((s) => s === "." || s === "..")) {
      throw new Malformed("key: not a record key");
    }
    tx.type = expectStr(items[6], TYPE_BYTES_MAX, "type");
    if (!TYPE.test(tx.type)) throw new Malformed("type: not a record type");
    if (!(items[7] instanceof Map)) throw new Malformed("body: expected a map");
    checkPlain(items[7], 0);
    if (encode(items[7]).length > BODY_BYTES_MAX) fail(`tx: body larger than ${BODY_BYTES_MAX}`);
    tx.signature = expectBytes(items[8], SIGNATURE_BYTES, "signature");
    tx.unsigned = encode(items.slice(1, 8));
    return tx;
  } catch (error) {
    if (error instanceof Malformed) fail(`tx: ${error.message}`);
    throw error;
  }
}

function decodeHeader(raw, format) {
  try {
    const h = expectList(decode(raw, HEADER_BYTES_MAX), format.headerItems, "header");
    expectInt(h[0], format.headerVersion, format.headerVersion, "header version");
    return {
      height: expectInt(h[1], 1, HEIGHT_MAX, "height"),
      prevHash: expectBytes(h[2], DIGEST_BYTES, "prev_hash"),
      txRoot: expectBytes(h[3], DIGEST_BYTES, "tx_root"),
      txCount: expectInt(h[4], 0, BLOCK_TXS_MAX, "tx_count"),
      historyRoot: expectBytes(h[5], DIGEST_BYTES, "history_root"),
      timestampMs: expectInt(h[6], 0, TIMESTAMP_MS_MAX, "timestamp_ms"),
      view: expectInt(h[7], 0, HEIGHT_MAX, "view"),
      proposer: expectInt(h[8], 0, VALIDATORS_MAX - 1, "proposer"),
      outcomeRoot: format.outcome ? expectBytes(h[9], DIGEST_BYTES, "outcome_root") : null,
    };
  } catch (error) {
    if (error instanceof Malformed) fail(`header: malformed header: ${error.message}`);
    throw error;
  }
}

function decodeCertificate(raw) {
  const items = expectList(decode(raw, CERTIFICATE_BYTES_MAX), 4, "certificate");
  if (!Array.isArray(items[3]) || items[3].length > VALIDATORS_MAX) {
    throw new Malformed("votes: expected an array");
  }
  const votes = items[3].map((v) => [
    expectInt(expectList(v, 2, "vote")[0], 0, VALIDATORS_MAX - 1, "vote index"),
    expectBytes(v[1], SIGNATURE_BYTES, "vote signature"),
  ]);
  return {
    height: expectInt(items[0], 1, HEIGHT_MAX, "height"),
    blockHash: expectBytes(items[1], DIGEST_BYTES, "block_hash"),
    view: expectInt(items[2], 0, HEIGHT_MAX, "view"),
    votes,
  };
}

// --- The checks (sections 9.3, 14.2, 14.3) ---------------------------------------------------

async function verifyCertificate(cert, header, blockHash, genesis, where) {
  const at = `${where}certificate of block ${header.height}`;
  if (cert.height !== header.height || !bytesEqualTo(cert.blockHash, blockHash)) {
    fail(`${at}: certificate is for another block than height ${header.height}`);
  }
  if (cert.view < header.view) fail(`${at}: certificate predates the block's view`);
  const indices = cert.votes.map(([i]) => i);
  if (indices.some((i, k) => k > 0 && i <= indices[k - 1])) {
    fail(`${at}: certificate votes are not sorted by distinct validator index`);
  }
  if (indices.length < genesis.quorum) {
    fail(`${at}: certificate has ${indices.length} votes, ${genesis.quorum} needed`);
  }
  const payload = encode([genesis.chainId, cert.view, cert.height, cert.blockHash]);
  for (const [index, signature] of cert.votes) {
    if (index >= BigInt(genesis.validators.length)) {
      fail(`${at}: certificate vote from unknown validator index ${index}`);
    }
    const key = genesis.validators[Number(index)].public_key;
    if (!(await verifyEd25519(key, DOMAIN.COMMIT, payload, signature))) {
      fail(`${at}: certificate signature of validator ${index} is invalid`);
    }
  }
  return indices.map((i) => genesis.validators[Number(i)].id);
}

async function certified(doc, genesis, format, where) {
  const header = decodeHeader(bytesField(doc, "header"), format);
  const blockHash = await sha256(bytesField(doc, "header"));
  if (!bytesEqualTo(bytesField(doc, "block_hash", DIGEST_BYTES), blockHash)) {
    fail(`${where}block_hash is not the hash of the header`);
  }
  if (intField(doc, "height", 1, HEIGHT_MAX) !== header.height) {
    fail(`${where}height is not the header's height ${header.height}`);
  }
  if (header.proposer !== header.view % BigInt(genesis.validators.length)) {
    fail(`${where}header's proposer is not the primary of its view`);
  }
  let cert;
  try {
    cert = decodeCertificate(bytesField(doc, "certificate"));
  } catch (error) {
    if (!(error instanceof Malformed)) throw error;
    fail(`${where}certificate of block ${header.height}: malformed certificate: ${error.message}`);
  }
  const signers = await verifyCertificate(cert, header, blockHash, genesis, where);
  return { header, blockHash, signers };
}

async function checkpoint(doc, genesis, format, where) {
  const head = await certified(doc, genesis, format, where);
  if (!bytesEqualTo(bytesField(doc, "history_root", DIGEST_BYTES), head.header.historyRoot)) {
    fail(`${where}history_root is not the header's history root`);
  }
  return head;
}

async function transaction(doc, genesis) {
  const tx = decodeTx(bytesField(doc, "tx"));
  tx.txId = await sha256(bytesField(doc, "tx"));
  if (!bytesEqualTo(bytesField(doc, "tx_id", DIGEST_BYTES), tx.txId)) {
    fail("tx_id is not the hash of the tx");
  }
  if (tx.chainId !== genesis.chainId) fail(`tx: wrong_chain: tx is for chain ${tx.chainId}`);
  const client = genesis.clients.get(tx.clientId);
  if (!client) fail(`tx: unknown_client: no client ${tx.clientId} in genesis`);
  if (!mayWrite(genesis, client, tx.key)) {
    fail(`tx: forbidden_namespace: ${client.organisation} may not write ${tx.key}`);
  }
  if (!(await verifyEd25519(client.public_key, DOMAIN.TX, tx.unsigned, tx.signature))) {
    fail("tx: bad_signature: signature does not match the client's key");
  }
  return tx;
}

async function position(doc, tx, header) {
  const count = header.txCount;
  if (intField(doc, "tx_count", 1, BLOCK_TXS_MAX) !== count) {
    fail(`tx_count is not the header's tx count ${count}`);
  }
  const index = intField(doc, "index", 0, BLOCK_TXS_MAX - 1);
  if (index >= count) fail(`index ${index} is not below the block's tx count ${count}`);
  const proof = hashes(doc, "tx_proof");
  if (!(await verifyInclusion(tx.txId, index, count, proof, header.txRoot))) {
    fail(`tx_proof does not include the tx at index ${index} of ${count}`);
  }
  return index;
}

async function outcomeOf(doc, tx, index, header) {
  const outcome = doc.get("outcome");
  if (outcome !== "" && !REASONS.includes(outcome)) {
    fail('outcome: expected "" (accepted) or a reason code');
  }
  const proof = hashes(doc, "outcome_proof");
  const leaf = encode([tx.txId, outcome]);
  if (!(await verifyInclusion(leaf, index, header.txCount, proof, header.outcomeRoot))) {
    fail(`outcome_proof does not prove outcome ${JSON.stringify(outcome || "accepted")}`);
  }
  return outcome;
}

async function anchorOf(value, block, genesis, format) {
  if (value === null) return null;
  const anchor = fields(value, [...CHECKPOINT_FIELDS, "history_proof"], "anchor");
  const top = await checkpoint(anchor, genesis, format, "anchor ");
  const height = block.header.height;
  const size = top.header.height;
  if (size <= height) fail(`anchor block ${size} is not above block ${height}`);
  const proof = hashes(anchor, "history_proof");
  if (!(await verifyInclusion(block.blockHash, height, size, proof, top.header.historyRoot))) {
    fail(`anchor history_proof does not include block ${height}`);
  }
  return top;
}

// The governance blocks of a version 3 bundle (section 14.5). This page does not replay
// governance yet: it reads the list, and refuses to judge a bundle that carries changes
// (the reference verifier, `cityledger verify-proof`, does), rather than judge it against a
// configuration it has not derived.
function governanceCarried(value) {
  if (!Array.isArray(value) || value.length > GOVERNANCE_BLOCKS_MAX) {
    fail(`governance: a list of at most ${GOVERNANCE_BLOCKS_MAX} blocks`);
  }
  if (value.length > 0) {
    fail(`governance: this page does not replay the ${value.length} governance blocks this `
      + "bundle carries (section 14.5); check it with cityledger verify-proof");
  }
}

// Section 14.3 in order; what the bundle proves, or InvalidProof with the first failure.
export async function verifyBundle(doc, genesis) {
  const format = doc instanceof Map ? FORMATS[doc.get("format")] : undefined;
  if (format === undefined) fail("not a proof bundle: the format is not one this page knows");
  const names = format.outcome ? [...BUNDLE_FIELDS, "outcome", "outcome_proof"] : BUNDLE_FIELDS;
  fields(doc, format.governance ? [...names, "governance"] : names, "the bundle");
  if (doc.get("chain_id") !== genesis.chainId) {
    fail(`the bundle is for chain ${JSON.stringify(doc.get("chain_id"))}, not ${genesis.chainId}`);
  }
  if (!bytesEqualTo(bytesField(doc, "genesis_hash", DIGEST_BYTES), genesis.hash)) {
    fail("the bundle's genesis_hash is not this genesis's hash");
  }
  if (format.governance) governanceCarried(doc.get("governance"));
  const tx = await transaction(doc, genesis);
  const block = await certified(new Map(["height", "header", "block_hash", "certificate"].map(
    (k) => [k, doc.get(k)])), genesis, format, "");
  const now = block.header.timestampMs;
  if (tx.timestampMs < now - BigInt(genesis.consensus.get("tx_ttl_ms"))) {
    fail("tx is not valid in its block: timestamp older than the tx time-to-live");
  }
  if (tx.timestampMs > now + BigInt(genesis.consensus.get("clock_skew_ms"))) {
    fail("tx is not valid in its block: timestamp too far in the future");
  }
  const index = await position(doc, tx, block.header);
  const outcome = format.outcome ? await outcomeOf(doc, tx, index, block.header) : "";
  const anchor = await anchorOf(doc.get("anchor"), block, genesis, format);
  return { tx, block, index, outcome, anchor };
}

// The verdict the page shows: {valid: true, ...what it proves} or {valid: false, reason}.
export async function verdict(bundleBytes, genesis) {
  try {
    const proven = await verifyBundle(parseBundle(bundleBytes), genesis);
    return { valid: true, proven };
  } catch (error) {
    if (error instanceof InvalidProof) return { valid: false, reason: error.message };
    throw error;
  }
}

export { fromHex };
