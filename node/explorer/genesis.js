// The genesis file the auditor holds (docs/protocol.md sections 10 and 11): a reader of the
// TOML that `cityledger cluster init` and `cityledger genesis assemble` write (tables, arrays
// of tables, strings, integers, booleans, decimal numbers and arrays of them; no inline tables
// or dotted keys), the checks of section 10 that the verifier relies on, and the genesis hash.

import { DOMAIN, concat, fromHex, publicKeyProblem, sha256 } from "./crypto.js";
import { encode } from "./msgpack.js";

export const GENESIS_BYTES_MAX = 4194304;
const VALIDATORS_MAX = 64;
const CLIENTS_MAX = 10000;
const ADMINS_MAX = 1000;
const ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const NAMESPACE = /^([A-Za-z0-9._:-]+\/)+$/;
const KINDS = ["municipal", "insurer"];
const ROLES = ["clerk", "auditor"];
const CONSENSUS = {
  block_txs_max: [1, 10000, 2000], block_bytes_max: [65536, 67108864, 8388608],
  block_interval_ms: [0, 60000, 20], view_change_timeout_ms: [100, 600000, 2000],
  checkpoint_interval: [1, 10000, 16], tx_ttl_ms: [1000, 604800000, 600000],
  clock_skew_ms: [0, 3600000, 30000],
};
const RULES = {
  approval_threshold_cents: [1, 10 ** 15, 1000000], split_window_ms: [1, 31622400000, 86400000],
  round_amount_cents: [1, 10 ** 15, 100000], velocity_window_ms: [1, 31622400000, 86400000],
  velocity_max_payments: [1, 255, 20], benford_min_payments: [9, 10 ** 9, 300],
  benford_mad_max_ppm: [0, 1000000, 15000],
};
// Section 10.7: the governance policy (0: more than half of the voting organisations).
const GOVERNANCE = { quorum: [0, 64, 0], expiry_blocks: [1, 1000000, 1000] };
const TOP_LEVEL = ["chain_id", "consensus", "rules", "validators", "clients", "write_policies",
  "read_policies", "public_namespaces", "admins", "governance"];

export class InvalidGenesis extends Error {}

// --- TOML (the subset genesis files use) ------------------------------------------------------

class Toml {
  constructor(text) {
    this.text = text;
    this.pos = 0;
    this.line = 1;
  }

  fail(what) {
    throw new InvalidGenesis(`not a genesis file the explorer reads: line ${this.line}: ${what}`);
  }

  peek() {
    return this.text[this.pos];
  }

  skip(newlines) {
    for (;;) {
      const c = this.peek();
      if (c === " " || c === "\t" || c === "\r") this.pos++;
      else if (c === "\n" && newlines) { this.pos++; this.line++; }
      else if (c === "#") { while (this.pos < this.text.length && this.peek() !== "\n") this.pos++; }
      else return;
    }
  }

  expect(token) {
    if (!this.text.startsWith(token, this.pos)) this.fail(`expected ${JSON.stringify(token)}`);
    this.pos += token.length;
  }

  endOfLine() {
    this.skip(false);
    if (this.pos < this.text.length && this.peek() !== "\n") this.fail("expected a new line");
  }

  key() {
    if (this.peek() === '"') return this.basicString();
    const match = /^[A-Za-z0-9_-]+/.exec(this.text.slice(this.pos, this.pos + 128));
    if (!match) this.fail("expected a key");
    this.pos += match[0].length;
    return match[0];
  }

  basicString() {
    this.expect('"');
    let out = "";
    for (;;) {
      const c = this.text[this.pos++];
      if (c === undefined || c === "\n") this.fail("unterminated string");
      if (c === '"') return out;
      if (c !== "\\") { out += c; continue; }
      const e = this.text[this.pos++];
      const simple = { b: "\b", t: "\t", n: "\n", f: "\f", r: "\r", '"': '"', "\\": "\\" }[e];
      if (simple !== undefined) { out += simple; continue; }
      const width = e === "u" ? 4 : e === "U" ? 8 : 0;
      const digits = this.text.slice(this.pos, this.pos + width);
      if (!width || !/^[0-9A-Fa-f]+$/.test(digits) || digits.length !== width) {
        this.fail("a bad escape in a string");
      }
      const code = parseInt(digits, 16);
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) this.fail("a bad \\u escape");
      out += String.fromCodePoint(code);
      this.pos += width;
    }
  }

  value() {
    const c = this.peek();
    if (c === '"') {
      if (this.text.startsWith('"""', this.pos)) this.fail("multi-line strings are not read");
      return this.basicString();
    }
    if (c === "'") {
      const end = this.text.indexOf("'", this.pos + 1);
      const body = this.text.slice(this.pos + 1, end);
      if (end < 0 || body.includes("\n")) this.fail("unterminated string");
      this.pos = end + 1;
      return body;
    }
    if (c === "[") return this.array();
    const match = /^[^\s,\]#]+/.exec(this.text.slice(this.pos, this.pos + 64));
    if (!match) this.fail("expected a value");
    this.pos += match[0].length;
    return this.scalar(match[0]);
  }

  scalar(word) {
    if (word === "true") return true;
    if (word === "false") return false;
    if (/^[+-]?(0|[1-9](_?[0-9])*)$/.test(word)) return BigInt(word.replaceAll("_", ""));
    if (/^[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?$/.test(word)) {
      return { number: Number(word.replaceAll("_", "")) };
    }
    return this.fail(`${JSON.stringify(word.slice(0, 20))} is no value the explorer reads`);
  }

  array() {
    this.expect("[");
    const out = [];
    for (;;) {
      this.skip(true);
      if (this.peek() === "]") { this.pos++; return out; }
      out.push(this.value());
      this.skip(true);
      if (this.peek() === ",") this.pos++;
      else if (this.peek() !== "]") this.fail("expected , or ] in an array");
    }
  }

  document() {
    const root = new Map();
    let table = root;
    const defined = new Set();
    for (;;) {
      this.skip(true);
      if (this.pos >= this.text.length) return root;
      if (this.peek() === "[") table = this.header(root, defined);
      else {
        const key = this.key();
        this.skip(false);
        this.expect("=");
        this.skip(false);
        if (table.has(key)) this.fail(`the key ${key} twice`);
        table.set(key, this.value());
      }
      this.endOfLine();
    }
  }

  header(root, defined) {
    const many = this.text.startsWith("[[", this.pos);
    this.expect(many ? "[[" : "[");
    this.skip(false);
    const name = this.key();
    this.skip(false);
    this.expect(many ? "]]" : "]");
    const table = new Map();
    if (many) {
      if (!root.has(name)) root.set(name, []);
      if (!Array.isArray(root.get(name)) || defined.has(name)) this.fail(`[[${name}]]`);
      root.get(name).push(table);
    } else {
      if (root.has(name)) this.fail(`the table [${name}] twice`);
      defined.add(name);
      root.set(name, table);
    }
    return table;
  }
}

export function parseToml(text) {
  return new Toml(text).document();
}

// --- Section 10: the checks, and the content of section 11 -------------------------------------

function isInt(v) {
  return typeof v === "bigint";
}

function strings(entry, where, names, problems) {
  const out = {};
  if (!(entry instanceof Map)) {
    problems.push(`${where}: expected a table`);
    return null;
  }
  let bad = false;
  for (const name of names) {
    const value = entry.get(name);
    if (typeof value !== "string" || !value || [...value].length > 256) {
      problems.push(`${where}.${name}: expected a non-empty string`);
      bad = true;
    }
    out[name] = value;
  }
  for (const name of entry.keys()) {
    if (!names.includes(name)) {
      problems.push(`${where}.${name}: unknown field`);
      bad = true;
    }
  }
  if (names.includes("id") && typeof out.id === "string" && !ID.test(out.id)) {
    problems.push(`${where}.id: expected a lowercase identifier`);
    bad = true;
  }
  return bad ? null : out;
}

function publicKey(text, where, problems) {
  const raw = typeof text === "string" && text.length === 64 ? fromHex(text.toLowerCase()) : null;
  if (raw === null) {
    problems.push(`${where}.public_key: expected 64 hex digits of an Ed25519 public key`);
    return null;
  }
  const problem = publicKeyProblem(raw);
  if (problem) problems.push(`${where}.public_key: refused Ed25519 public key: ${problem}`);
  return problem ? null : raw;
}

function params(raw, bounds, where, problems) {
  const out = new Map(Object.entries(bounds).map(([k, [, , d]]) => [k, BigInt(d)]));
  if (!(raw instanceof Map)) {
    problems.push(`${where}: expected a table`);
    return out;
  }
  for (const [name, value0] of raw) {
    let value = value0;
    if (where === "rules" && name === "benford_mad_max") {
      const n = typeof value === "bigint" ? Number(value) : value?.number;
      if (typeof n === "number" && n >= 0 && n <= 1) {
        out.set("benford_mad_max_ppm", BigInt(Math.round(n * 1000000)));
        continue;
      }
    }
    if (!(name in bounds)) {
      problems.push(`${where}.${name}: unknown parameter`);
      continue;
    }
    const [low, high] = bounds[name];
    if (!isInt(value) || value < BigInt(low) || value > BigInt(high)) {
      problems.push(`${where}.${name}: expected an integer in [${low}, ${high}]`);
      continue;
    }
    out.set(name, value);
  }
  return out;
}

function namespaces(raw, where, problems) {
  if (!Array.isArray(raw) || !raw.every((n) => typeof n === "string" && NAMESPACE.test(n))) {
    problems.push(`${where}: expected prefixes such as 'fiscal/'`);
    return null;
  }
  return raw;
}

function policies(raw, table, problems) {
  const out = new Map();
  if (!Array.isArray(raw)) {
    problems.push(`${table}: expected a list of tables`);
    return out;
  }
  raw.forEach((entry, i) => {
    const where = `${table}[${i}]`;
    const keys = entry instanceof Map ? [...entry.keys()].sort().join(",") : "";
    if (keys !== "namespaces,organisation") {
      problems.push(`${where}: expected exactly organisation and namespaces`);
      return;
    }
    const org = entry.get("organisation");
    if (typeof org !== "string" || !org) {
      problems.push(`${where}.organisation: expected a non-empty string`);
      return;
    }
    const checked = namespaces(entry.get("namespaces"), `${where}.namespaces`, problems);
    if (checked) out.set(org, [...(out.get(org) || []), ...checked]);
  });
  return out;
}

function validatorsOf(raw, problems) {
  if (!Array.isArray(raw) || raw.length < 1 || raw.length > VALIDATORS_MAX) {
    problems.push(`validators: expected between 1 and ${VALIDATORS_MAX} validators`);
    return [];
  }
  const out = [];
  raw.forEach((entry, i) => {
    const where = `validators[${i}]`;
    const f = strings(entry, where, ["id", "organisation", "kind", "public_key", "url"], problems);
    if (!f) return;
    if (!KINDS.includes(f.kind)) problems.push(`${where}.kind: expected one of ${KINDS}`);
    if (!/^https?:\/\//.test(f.url)) problems.push(`${where}.url: expected an http(s) URL`);
    const key = publicKey(f.public_key, where, problems);
    if (key) out.push({ ...f, public_key: key, index: i });
  });
  unique(out.map((v) => v.id), "validators: duplicate id", problems);
  unique(out.map((v) => v.public_key.join()), "validators: duplicate public key", problems);
  return out;
}

function clientsOf(raw, problems) {
  const out = new Map();
  if (!Array.isArray(raw) || raw.length > CLIENTS_MAX) {
    problems.push(`clients: expected a list of at most ${CLIENTS_MAX} clients`);
    return out;
  }
  raw.forEach((entry, i) => {
    const where = `clients[${i}]`;
    const role = entry instanceof Map && entry.has("role") ? entry.get("role") : "clerk";
    if (!ROLES.includes(role)) problems.push(`${where}.role: expected one of ${ROLES}`);
    const rest = entry instanceof Map ? new Map([...entry].filter(([k]) => k !== "role")) : entry;
    const f = strings(rest, where, ["id", "organisation", "public_key"], problems);
    if (!f) return;
    const key = publicKey(f.public_key, where, problems);
    if (out.has(f.id)) problems.push(`clients: duplicate id ${f.id}`);
    else if (key && ROLES.includes(role)) out.set(f.id, { ...f, public_key: key, role });
  });
  return out;
}

function adminsOf(raw, problems) {
  const out = new Map();
  if (!Array.isArray(raw) || raw.length > ADMINS_MAX) {
    problems.push(`admins: expected a list of at most ${ADMINS_MAX} admins`);
    return out;
  }
  raw.forEach((entry, i) => {
    const where = `admins[${i}]`;
    const f = strings(entry, where, ["id", "organisation", "public_key"], problems);
    if (!f) return;
    const key = publicKey(f.public_key, where, problems);
    if (out.has(f.id)) problems.push(`admins: duplicate id ${f.id}`);
    else if (key) out.set(f.id, { ...f, public_key: key });
  });
  return out;
}

function unique(values, message, problems) {
  const seen = new Set();
  for (const v of values) {
    if (seen.has(v)) problems.push(`${message} ${v}`);
    seen.add(v);
  }
}

function contentOf(g) {
  const policyList = (map) =>
    [...map].map(([organisation, ns]) => new Map([["organisation", organisation],
      ["namespaces", ns]]));
  const content = new Map([
    ["chain_id", g.chainId],
    ["consensus", g.consensus],
    ["validators", g.validators.map((v) => new Map([["id", v.id],
      ["organisation", v.organisation], ["kind", v.kind], ["public_key", hexOf(v.public_key)],
      ["url", v.url]]))],
    ["clients", [...g.clients.values()].map((c) => {
      const m = new Map([["id", c.id], ["organisation", c.organisation],
        ["public_key", hexOf(c.public_key)]]);
      if (c.role !== "clerk") m.set("role", c.role);
      return m;
    })],
    ["write_policies", policyList(g.policies)],
  ]);
  if (g.reads.size) content.set("read_policies", policyList(g.reads));
  if (g.publicNamespaces.length) content.set("public_namespaces", g.publicNamespaces);
  const defaults = Object.entries(RULES).every(([k, [, , d]]) => g.rules.get(k) === BigInt(d));
  if (!defaults) content.set("rules", g.rules);
  if (g.admins.size) {
    content.set("admins", [...g.admins.values()].map((a) => new Map([["id", a.id],
      ["organisation", a.organisation], ["public_key", hexOf(a.public_key)]])));
  }
  const policy = Object.entries(GOVERNANCE).every(([k, [, , d]]) =>
    g.governance.get(k) === BigInt(d));
  if (!policy) content.set("governance", g.governance);
  return content;
}

function hexOf(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The genesis of `text` (its validators, clients, policies, parameters and hash), or
// InvalidGenesis listing every problem found.
export async function loadGenesis(text) {
  if (new TextEncoder().encode(text).length > GENESIS_BYTES_MAX) {
    throw new InvalidGenesis(`larger than ${GENESIS_BYTES_MAX} bytes`);
  }
  const doc = parseToml(text);
  const problems = [];
  const chainId = doc.get("chain_id");
  if (typeof chainId !== "string" || !ID.test(chainId)) {
    problems.push("chain_id: expected a lowercase identifier of at most 64 characters");
  }
  const g = {
    chainId,
    consensus: params(doc.get("consensus") ?? new Map(), CONSENSUS, "consensus", problems),
    rules: params(doc.get("rules") ?? new Map(), RULES, "rules", problems),
    validators: validatorsOf(doc.get("validators"), problems),
    clients: clientsOf(doc.get("clients") ?? [], problems),
    policies: policies(doc.get("write_policies") ?? [], "write_policies", problems),
    reads: policies(doc.get("read_policies") ?? [], "read_policies", problems),
    publicNamespaces: namespaces(doc.get("public_namespaces") ?? [], "public_namespaces",
      problems) ?? [],
    admins: adminsOf(doc.get("admins") ?? [], problems),
    governance: params(doc.get("governance") ?? new Map(), GOVERNANCE, "governance", problems),
  };
  const known = new Set([...g.validators.map((v) => v.organisation),
    ...[...g.clients.values()].map((c) => c.organisation)]);
  for (const [table, map] of [["write_policies", g.policies], ["read_policies", g.reads]]) {
    for (const org of map.keys()) {
      if (!known.has(org)) problems.push(`${table}: organisation ${org} has no member`);
    }
  }
  for (const v of g.validators) {
    if (g.clients.has(v.id)) problems.push(`clients: id ${v.id} is also a validator's`);
  }
  for (const a of g.admins.values()) {
    if (!known.has(a.organisation)) {
      problems.push(`admins: organisation ${a.organisation} has no member`);
    }
    if (g.clients.has(a.id) || g.validators.some((v) => v.id === a.id)) {
      problems.push(`admins: id ${a.id} is also a client's or a validator's`);
    }
  }
  for (const name of doc.keys()) {
    if (!TOP_LEVEL.includes(name)) problems.push(`unknown field ${name}`);
  }
  if (problems.length) throw new InvalidGenesis(problems.join("; "));
  g.hash = await sha256(concat(new TextEncoder().encode(DOMAIN.GENESIS), encode(contentOf(g))));
  g.quorum = quorum(g.validators.length);
  return g;
}

// Section 9.3: f = (n - 1) // 3 and q = (n + f) // 2 + 1.
export function quorum(n) {
  const f = Math.floor((n - 1) / 3);
  return Math.floor((n + f) / 2) + 1;
}

// Whether `client` may write `key` (section 10.5): auditors write nothing.
export function mayWrite(genesis, client, key) {
  if (client.role === "auditor") return false;
  return (genesis.policies.get(client.organisation) || []).some((ns) => key.startsWith(ns));
}
