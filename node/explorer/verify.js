// The explorer's proof verifier: a proof bundle (docs/protocol.md section 14) checked against
// the genesis file the auditor holds, in this page, with WebCrypto and this code alone. It
// asks the node nothing: the node that served the bundle is not trusted. Every check follows
// section 14.3 in its order and the first failure is the reason; the verdicts are those of
// the reference verifier (`cityledger verify-proof`), which the test suite compares. A version
// 3 bundle's governance (section 14.5) is replayed here with govrules.js: each governance
// block's certificate against the validators in force before it, each governance tx's
// signer, inclusion and acceptance, and the rules of section 20.4; the tx's signer and every
// certificate are then judged by the configuration in force at their height.

import {
  DIGEST_BYTES, DOMAIN, INCLUSION_PROOF_HASHES_MAX, SIGNATURE_BYTES, bytesEqualTo, fromHex,
  sha256, verifyEd25519, verifyInclusion,
} from "./crypto.js";
import { mayWrite } from "./genesis.js";
import { GOV_NAMESPACE, GovState, Refused } from "./govrules.js";
import { BadJson, Json } from "./json.js";
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
// Governance a version 3 bundle may carry, and the fields of its parts (section 14.5).
const GOVERNANCE_BLOCKS_MAX = 1024;
const GOVERNANCE_TXS_MAX = 2048;
const GOVERNANCE_BLOCK_FIELDS = ["block_hash", "certificate", "header", "height", "txs"];
const GOVERNANCE_TX_FIELDS = ["index", "outcome_proof", "tx", "tx_proof"];

export class InvalidProof extends Error {}

const utf8 = new TextEncoder();
const fail = (reason) => {
  throw new InvalidProof(reason);
};

// --- Reading a bundle file ---------------------------------------------------------------

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
    try {
      const reader = new Json(text);
      value = reader.value(0);
      reader.ws();
      if (reader.pos !== text.length) fail("not JSON: extra data");
    } catch (error) {
      if (error instanceof BadJson) fail(error.message);
      throw error;
    }
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

function decodeTx(raw, where = "") {
  if (raw.length > TX_BYTES_MAX) fail(`${where}tx: ${raw.length} bytes, the limit is ${TX_BYTES_MAX}`);
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
    tx.body = items[7];
    if (encode(items[7]).length > BODY_BYTES_MAX) fail(`${where}tx: body larger than ${BODY_BYTES_MAX}`);
    tx.signature = expectBytes(items[8], SIGNATURE_BYTES, "signature");
    tx.unsigned = encode(items.slice(1, 8));
    return tx;
  } catch (error) {
    if (error instanceof Malformed) fail(`${where}tx: ${error.message}`);
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

async function verifyCertificate(cert, header, blockHash, config, where) {
  const at = `${where}certificate of block ${header.height}`;
  if (cert.height !== header.height || !bytesEqualTo(cert.blockHash, blockHash)) {
    fail(`${at}: certificate is for another block than height ${header.height}`);
  }
  if (cert.view < header.view) fail(`${at}: certificate predates the block's view`);
  const indices = cert.votes.map(([i]) => i);
  if (indices.some((i, k) => k > 0 && i <= indices[k - 1])) {
    fail(`${at}: certificate votes are not sorted by distinct validator index`);
  }
  if (indices.length < config.quorum) {
    fail(`${at}: certificate has ${indices.length} votes, ${config.quorum} needed`);
  }
  const payload = encode([config.chainId, cert.view, cert.height, cert.blockHash]);
  for (const [index, signature] of cert.votes) {
    if (index >= BigInt(config.validators.length)) {
      fail(`${at}: certificate vote from unknown validator index ${index}`);
    }
    const key = config.validators[Number(index)].public_key;
    if (!(await verifyEd25519(key, DOMAIN.COMMIT, payload, signature))) {
      fail(`${at}: certificate signature of validator ${index} is invalid`);
    }
  }
  return indices.map((i) => config.validators[Number(i)].id);
}

async function certified(doc, config, format, where) {
  const header = decodeHeader(bytesField(doc, "header"), format);
  const blockHash = await sha256(bytesField(doc, "header"));
  if (!bytesEqualTo(bytesField(doc, "block_hash", DIGEST_BYTES), blockHash)) {
    fail(`${where}block_hash is not the hash of the header`);
  }
  if (intField(doc, "height", 1, HEIGHT_MAX) !== header.height) {
    fail(`${where}height is not the header's height ${header.height}`);
  }
  if (header.proposer !== header.view % BigInt(config.validators.length)) {
    fail(`${where}header's proposer is not the primary of its view`);
  }
  let cert;
  try {
    cert = decodeCertificate(bytesField(doc, "certificate"));
  } catch (error) {
    if (!(error instanceof Malformed)) throw error;
    fail(`${where}certificate of block ${header.height}: malformed certificate: ${error.message}`);
  }
  const signers = await verifyCertificate(cert, header, blockHash, config, where);
  return { header, blockHash, signers };
}

async function checkpoint(doc, config, format, where) {
  const head = await certified(doc, config, format, where);
  if (!bytesEqualTo(bytesField(doc, "history_root", DIGEST_BYTES), head.header.historyRoot)) {
    fail(`${where}history_root is not the header's history root`);
  }
  return head;
}

// Section 20.6: the signer a block under `config` may hold (one in force with rules 2-6 of
// section 5, or a retired one of the chain), and its signature under its key or one it
// rotated out (rule 9).
async function signedInForce(tx, config, where) {
  let signer = tx.chainId === config.chainId ? config.retired.get(tx.clientId) : undefined;
  if (signer === undefined) signer = stateless(tx, config, where);
  const keys = [signer.public_key, ...(config.rotated.get(tx.clientId) ?? [])];
  for (const key of keys) {
    if (await verifyEd25519(key, DOMAIN.TX, tx.unsigned, tx.signature)) return signer;
  }
  return fail(`${where}tx: bad_signature: signature does not match the client's key`);
}

function stateless(tx, config, where) {
  if (tx.chainId !== config.chainId) fail(`${where}tx: wrong_chain: tx is for chain ${tx.chainId}`);
  const admin = config.admins.get(tx.clientId);
  if (tx.key.startsWith(GOV_NAMESPACE) || admin !== undefined) {
    if (admin !== undefined && tx.key.startsWith(GOV_NAMESPACE)) return admin;
    if (admin !== undefined || config.clients.has(tx.clientId)) {
      fail(`${where}tx: forbidden_namespace: ${GOV_NAMESPACE} is written by admins only`);
    }
    fail(`${where}tx: unknown_client: no admin ${tx.clientId} in the configuration in force`);
  }
  const client = config.clients.get(tx.clientId);
  if (!client) fail(`${where}tx: unknown_client: no client ${tx.clientId} in the configuration`);
  if (!mayWrite(config, client, tx.key)) {
    fail(`${where}tx: forbidden_namespace: ${client.organisation} may not write ${tx.key}`);
  }
  return client;
}

async function transaction(doc, config) {
  const tx = decodeTx(bytesField(doc, "tx"));
  tx.txId = await sha256(bytesField(doc, "tx"));
  if (!bytesEqualTo(bytesField(doc, "tx_id", DIGEST_BYTES), tx.txId)) {
    fail("tx_id is not the hash of the tx");
  }
  await signedInForce(tx, config, "");
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

// A later checkpoint whose history holds the block as leaf `height`, certified by the
// validators in force before it (the governance below it replayed).
async function anchorOf(value, block, replay, format) {
  if (value === null) return null;
  const anchor = fields(value, [...CHECKPOINT_FIELDS, "history_proof"], "anchor");
  const size = intField(anchor, "height", 1, HEIGHT_MAX);
  const top = await checkpoint(anchor, await replay.before(size), format, "anchor ");
  const height = block.header.height;
  if (size <= height) fail(`anchor block ${size} is not above block ${height}`);
  const proof = hashes(anchor, "history_proof");
  if (!(await verifyInclusion(block.blockHash, height, size, proof, top.header.historyRoot))) {
    fail(`anchor history_proof does not include block ${height}`);
  }
  return top;
}

// The configuration in force at each height, replayed from the genesis and the certified
// governance txs a version 3 bundle carries (section 14.5), with the rules of govrules.js.
class Replay {
  constructor(genesis, blocks, format) {
    if (!Array.isArray(blocks) || blocks.length > GOVERNANCE_BLOCKS_MAX) {
      fail(`governance: a list of at most ${GOVERNANCE_BLOCKS_MAX} blocks`);
    }
    this.blocks = blocks;
    this.format = format;
    this.done = 0; // blocks replayed so far
    this.txs = 0;
    this.last = 0n; // the height of the last block replayed
    this.state = new GovState(genesis);
  }

  // The configuration in force before block `height`: every carried block below it replayed.
  async before(height) {
    while (this.done < this.blocks.length) {
      const where = `governance[${this.done}] `;
      const doc = fields(this.blocks[this.done], GOVERNANCE_BLOCK_FIELDS, where.trim());
      const at = intField(doc, "height", 1, HEIGHT_MAX);
      if (at >= height) break;
      if (at <= this.last) fail(`${where}height ${at} is not above the one before it`);
      await this.replay(doc, at, where);
      this.done += 1;
      this.last = at;
    }
    return this.state.config;
  }

  // Every carried block must lie below `top`, the highest block the bundle proves.
  async finish(top) {
    await this.before(top);
    if (this.done < this.blocks.length) fail(`governance[${this.done}] is not below block ${top}`);
  }

  async replay(doc, height, where) {
    const before = this.state.config;
    const block = await certified(doc, before, this.format, where);
    const items = doc.get("txs");
    if (!Array.isArray(items) || !items.length) {
      fail(`${where}txs: a list of at least one governance tx`);
    }
    this.txs += items.length;
    if (this.txs > GOVERNANCE_TXS_MAX) fail(`governance: more than ${GOVERNANCE_TXS_MAX} txs`);
    let last = -1n;
    for (const [number, item] of items.entries()) {
      const at = `${where}txs[${number}] `;
      const entry = fields(item, GOVERNANCE_TX_FIELDS, at.trim());
      const tx = decodeTx(bytesField(entry, "tx"), at);
      tx.txId = await sha256(bytesField(entry, "tx"));
      await signedInForce(tx, before, at);
      if (!tx.key.startsWith(GOV_NAMESPACE)) fail(`${at}tx is no governance tx`);
      const index = intField(entry, "index", 0, BLOCK_TXS_MAX - 1);
      if (index <= last) fail(`${at}index ${index} is not above the one before it`);
      last = index;
      await provenAccepted(entry, tx, index, block.header, at);
      try {
        await this.state.execute(tx, height, before);
      } catch (error) {
        if (!(error instanceof Refused)) throw error;
        fail(`${at}the rules refuse what block ${height} accepted (${error.message})`);
      }
    }
  }
}

// The governance tx is at `index` of the block, and accepted there.
async function provenAccepted(entry, tx, index, header, where) {
  const count = header.txCount;
  if (index >= count) fail(`${where}index ${index} is not below the block's tx count ${count}`);
  if (!(await verifyInclusion(tx.txId, index, count, hashes(entry, "tx_proof"), header.txRoot))) {
    fail(`${where}tx_proof does not include the tx at index ${index}`);
  }
  const leaf = encode([tx.txId, ""]);
  const proof = hashes(entry, "outcome_proof");
  if (!(await verifyInclusion(leaf, index, count, proof, header.outcomeRoot))) {
    fail(`${where}outcome_proof does not prove the tx accepted`);
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
  const height = intField(doc, "height", 1, HEIGHT_MAX);
  const replay = new Replay(genesis, format.governance ? doc.get("governance") : [], format);
  const config = await replay.before(height);
  const tx = await transaction(doc, config);
  const block = await certified(new Map(["height", "header", "block_hash", "certificate"].map(
    (k) => [k, doc.get(k)])), config, format, "");
  const now = block.header.timestampMs;
  if (tx.timestampMs < now - config.consensus.get("tx_ttl_ms")) {
    fail("tx is not valid in its block: timestamp older than the tx time-to-live");
  }
  if (tx.timestampMs > now + config.consensus.get("clock_skew_ms")) {
    fail("tx is not valid in its block: timestamp too far in the future");
  }
  const index = await position(doc, tx, block.header);
  const outcome = format.outcome ? await outcomeOf(doc, tx, index, block.header) : "";
  const anchor = await anchorOf(doc.get("anchor"), block, replay, format);
  await replay.finish(anchor === null ? height : anchor.header.height);
  const changes = replay.state.config.version;
  return { tx, block, index, outcome, anchor, changes, epoch: config.epoch };
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
