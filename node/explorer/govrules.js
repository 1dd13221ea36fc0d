// Governance replayed in this page (docs/protocol.md sections 20.1-20.5 and 20.8): the
// configuration in force, the kinds of change, and the rules of proposals and approvals in
// block order. A second implementation of what every validator runs, written from the
// protocol: the verifier replays the governance txs a proof bundle carries (section 14.5)
// with it, and judges the tx's signer and the blocks' certificates by the configuration it
// derives, never by anything the node says. Heights are BigInt, as the decoder gives them.

import { DOMAIN, bytesEqualTo, fromHex, publicKeyProblem, verifyEd25519 } from "./crypto.js";
import { quorum } from "./genesis.js";
import { encode } from "./msgpack.js";

export const GOV_NAMESPACE = "_gov/";
export const PROPOSALS = "_gov/proposals/";
export const APPROVALS = "_gov/approvals/";
const PROPOSAL_TYPE = "gov.proposal";
const APPROVAL_TYPE = "gov.approval";
const OLD_KEYS_MAX = 4; // keys rotated out kept per client (section 20.5)
const VALIDATORS_MAX = 64;
const NAMESPACES_MAX = 32;
const PARAMS_MAX = 8;
const TEXT_BYTES_MAX = 256; // an organisation, a URL
const ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const NAMESPACE = /^([A-Za-z0-9._:-]+\/)+$/;
const PRINTABLE = /^(?:[^\p{C}\p{Z}]| )*$/u; // no control, format or separator but the space
const ROLES = ["clerk", "auditor"];
const KINDS = ["municipal", "insurer"];
const CONSENSUS_BOUNDS = {
  block_txs_max: [1n, 10000n], block_bytes_max: [65536n, 67108864n],
  block_interval_ms: [0n, 60000n], view_change_timeout_ms: [100n, 600000n],
  checkpoint_interval: [1n, 10000n], tx_ttl_ms: [1000n, 604800000n],
  clock_skew_ms: [0n, 3600000n],
};
const GOVERNANCE_BOUNDS = { quorum: [0n, 64n], expiry_blocks: [1n, 1000000n] };
const FIELDS = {
  "add-client": ["id", "organisation", "role", "public_key"],
  "revoke-client": ["id"],
  "rotate-client-key": ["id", "public_key"],
  "add-admin": ["id", "organisation", "public_key"],
  "remove-admin": ["id"],
  "set-write-policy": ["organisation", "namespaces"],
  "set-read-policy": ["organisation", "namespaces"],
  "set-params": ["params"],
  "add-validator": ["id", "organisation", "kind", "public_key", "url", "proof"],
  "remove-validator": ["id"],
  "rotate-validator-key": ["id", "public_key", "url", "proof"],
};
const VALIDATOR_CHANGES = ["add-validator", "remove-validator", "rotate-validator-key"];
const utf8 = new TextEncoder();

// A governance rule refused a tx: `code` is the reason code of section 20.4.
export class Refused extends Error {
  constructor(code, why) {
    super(`${code}: ${why}`);
    this.code = code;
  }
}

function must(ok, code, why) {
  if (!ok) throw new Refused(code, why);
}

// --- The configuration in force (section 20.5) ------------------------------------------------

// The genesis as a configuration: its own shape (validators, clients, admins, policies,
// parameters, quorum), with what governance adds: retired ids, keys rotated out, removed
// validators, the version, the epoch and the height of the block that ended the last one.
export function configOf(genesis) {
  return { ...genesis, retired: new Map(), rotated: new Map(), former: new Map(), version: 0,
    epoch: 0, epochHeight: 0n };
}

export function votersOf(config) {
  return [...new Set(config.validators.map((v) => v.organisation))].sort();
}

// Approving organisations a change needs (section 20.1).
export function govQuorum(config) {
  const voters = votersOf(config).length;
  const wanted = Number(config.governance.get("quorum")) || Math.floor(voters / 2) + 1;
  return Math.min(wanted, voters);
}

function organisations(config) {
  return new Set([...config.validators, ...config.clients.values(), ...config.admins.values()]
    .map((m) => m.organisation));
}

function idTaken(config, id) {
  return config.clients.has(id) || config.admins.has(id) || config.retired.has(id)
    || config.former.has(id) || config.validators.some((v) => v.id === id);
}

function keyInUse(config, raw) {
  return [...config.validators, ...config.clients.values(), ...config.admins.values()]
    .some((m) => bytesEqualTo(m.public_key, raw));
}

// --- The kinds of change (section 20.3) ---------------------------------------------------------

function text(value, maxBytes) {
  return typeof value === "string" && utf8.encode(value).length <= maxBytes
    && PRINTABLE.test(value);
}

function keyOf(value) {
  const raw = typeof value === "string" && /^[0-9a-fA-F]{64}$/.test(value)
    ? fromHex(value.toLowerCase()) : null;
  must(raw !== null && publicKeyProblem(raw) === null, "schema",
    "public_key: 64 hex digits of a strict Ed25519 key");
  return raw;
}

const CHECKS = {
  id: (v) => must(typeof v === "string" && ID.test(v), "schema", "id: a lowercase identifier"),
  organisation: (v) => must(text(v, TEXT_BYTES_MAX) && v.length > 0, "schema",
    "organisation: 1 to 256 bytes of text"),
  role: (v) => must(ROLES.includes(v), "schema", "role: clerk or auditor"),
  public_key: keyOf,
  namespaces: (v) => {
    must(Array.isArray(v) && v.length <= NAMESPACES_MAX, "schema",
      `namespaces: a list of at most ${NAMESPACES_MAX} prefixes`);
    must(new Set(v).size === v.length, "schema", "namespaces: distinct prefixes");
    for (const ns of v) {
      must(typeof ns === "string" && NAMESPACE.test(ns), "schema", "namespace: 'fiscal/'");
      must(!ns.startsWith(GOV_NAMESPACE), "schema", `${GOV_NAMESPACE} is for admins only`);
    }
  },
  params: (v) => {
    must(v instanceof Map && v.size >= 1 && v.size <= PARAMS_MAX, "schema",
      `params: a map of 1 to ${PARAMS_MAX} parameters`);
    for (const [name, number] of v) {
      must(typeof number === "bigint", "schema", `params.${name}: an integer`);
      must(["governance.", "consensus.", "rules."].some((p) => name.startsWith(p)), "schema",
        `params.${name}: governance.*, consensus.* or rules.*`);
    }
  },
  kind: (v) => must(KINDS.includes(v), "schema", "kind: municipal or insurer"),
  url: (v) => must(text(v, TEXT_BYTES_MAX) && /^https?:\/\//.test(v), "schema",
    "url: an http:// or https:// URL of at most 256 bytes"),
  proof: (v) => must(typeof v === "string" && /^[0-9a-fA-F]{128}$/.test(v), "schema",
    "proof: 128 hex digits (a signature)"),
};

// The change a proposal's body describes (a Map), or Refused (schema, not_in_force).
export function parseChange(body) {
  const kind = body.get("change");
  must(typeof kind === "string" && Object.hasOwn(FIELDS, kind), "schema",
    "change: not a kind of change");
  const names = FIELDS[kind];
  const unknown = [...body.keys()].filter((k) => k !== "change" && !names.includes(k)).sort();
  must(!unknown.length, "schema", `unknown field ${JSON.stringify(unknown[0])} for ${kind}`);
  for (const name of names) {
    must(body.has(name), "schema", `field ${JSON.stringify(name)} is missing`);
    CHECKS[name](body.get(name));
  }
  const f = new Map(names.map((n) => [n, body.get(n)]));
  if (kind === "set-params") {
    for (const [name, number] of f.get("params")) {
      must(!name.startsWith("rules."), "not_in_force", `${name}: not yet`);
      const consensus = name.startsWith("consensus.");
      const bounds = consensus ? CONSENSUS_BOUNDS : GOVERNANCE_BOUNDS;
      const short = name.slice(consensus ? 10 : 11);
      must(Object.hasOwn(bounds, short), "schema", `params.${name}: unknown parameter`);
      const [low, high] = bounds[short];
      must(number >= low && number <= high, "schema", `params.${name}: in [${low}, ${high}]`);
    }
  }
  const endsEpoch = kind === "set-params"
    ? [...f.get("params").keys()].some((n) => n.startsWith("consensus."))
    : VALIDATOR_CHANGES.includes(kind);
  let subject = `id:${f.get("id")}`;
  if (kind === "set-write-policy" || kind === "set-read-policy") {
    subject = `${kind}:${f.get("organisation")}`;
  } else if (kind === "set-params") subject = "set-params";
  return { kind, f, endsEpoch, subject };
}

// Section 20.8: a new validator key signs [chain_id, id, public_key] in the POSSESSION domain.
export async function checkPossession(change, chainId) {
  if (change.kind !== "add-validator" && change.kind !== "rotate-validator-key") return;
  const raw = fromHex(change.f.get("public_key").toLowerCase());
  const payload = encode([chainId, change.f.get("id"), raw]);
  const proof = fromHex(change.f.get("proof").toLowerCase());
  must(await verifyEd25519(raw, DOMAIN.POSSESSION, payload, proof), "bad_proof",
    "proof: not the new key's signature of [chain_id, id, public_key]");
}

function unusedKey(config, change) {
  const raw = keyOf(change.f.get("public_key"));
  must(!keyInUse(config, raw), "conflict", "the public key is already in force");
  return raw;
}

function knownOrganisation(config, organisation) {
  must(organisations(config).has(organisation), "conflict",
    `no organisation ${JSON.stringify(organisation)} in the configuration`);
}

function freeId(config, id) {
  must(!idTaken(config, id), "conflict", `the id ${JSON.stringify(id)} is taken`);
}

function without(map, key) {
  return new Map([...map].filter(([k]) => k !== key));
}

function withValidators(validators) {
  const indexed = validators.map((v, index) => ({ ...v, index }));
  return { validators: indexed, quorum: quorum(indexed.length) };
}

const APPLY = {
  "add-client": (c, ch) => {
    const id = ch.f.get("id");
    freeId(c, id);
    knownOrganisation(c, ch.f.get("organisation"));
    const client = { id, organisation: ch.f.get("organisation"), role: ch.f.get("role"),
      public_key: unusedKey(c, ch) };
    return { clients: new Map([...c.clients, [id, client]]) };
  },
  "revoke-client": (c, ch) => {
    const id = ch.f.get("id");
    must(c.clients.has(id), "conflict", `no client ${JSON.stringify(id)} in force`);
    return { clients: without(c.clients, id),
      retired: new Map([...c.retired, [id, c.clients.get(id)]]) };
  },
  "rotate-client-key": (c, ch) => {
    const id = ch.f.get("id");
    const client = c.clients.get(id);
    must(client !== undefined, "conflict", `no client ${JSON.stringify(id)} in force`);
    const fresh = { ...client, public_key: unusedKey(c, ch) };
    const old = [client.public_key, ...(c.rotated.get(id) ?? [])].slice(0, OLD_KEYS_MAX);
    return { clients: new Map([...c.clients, [id, fresh]]),
      rotated: new Map([...c.rotated, [id, old]]) };
  },
  "add-admin": (c, ch) => {
    const id = ch.f.get("id");
    freeId(c, id);
    const admin = { id, organisation: ch.f.get("organisation"), public_key: unusedKey(c, ch) };
    return { admins: new Map([...c.admins, [id, admin]]) };
  },
  "remove-admin": (c, ch) => {
    const id = ch.f.get("id");
    const admin = c.admins.get(id);
    must(admin !== undefined, "conflict", `no admin ${JSON.stringify(id)} in force`);
    const others = [...c.admins.values()].filter((a) => a.organisation === admin.organisation);
    const last = others.length === 1;
    must(!(last && votersOf(c).includes(admin.organisation)), "conflict",
      `${id} is the last admin of ${admin.organisation}, which votes`);
    return { admins: without(c.admins, id), retired: new Map([...c.retired, [id, admin]]) };
  },
  "set-write-policy": (c, ch) => ({ policies: policy(c, ch, c.policies) }),
  "set-read-policy": (c, ch) => ({ reads: policy(c, ch, c.reads) }),
  "set-params": (c, ch) => {
    const consensus = new Map(c.consensus);
    const governance = new Map(c.governance);
    for (const [name, number] of ch.f.get("params")) {
      if (name.startsWith("consensus.")) consensus.set(name.slice(10), number);
      else governance.set(name.slice(11), number);
    }
    const voters = votersOf(c).length;
    must(governance.get("quorum") <= BigInt(voters), "conflict",
      `a quorum above the ${voters} voting organisations`);
    return { consensus, governance };
  },
  "add-validator": (c, ch) => {
    const id = ch.f.get("id");
    freeId(c, id);
    knownOrganisation(c, ch.f.get("organisation"));
    must(c.validators.length < VALIDATORS_MAX, "conflict",
      `the set holds ${VALIDATORS_MAX} validators`);
    const v = { id, organisation: ch.f.get("organisation"), kind: ch.f.get("kind"),
      public_key: unusedKey(c, ch), url: ch.f.get("url") };
    return withValidators([...c.validators, v]);
  },
  "remove-validator": (c, ch) => {
    const id = ch.f.get("id");
    const gone = c.validators.find((v) => v.id === id);
    must(gone !== undefined, "conflict", `no validator ${JSON.stringify(id)} in force`);
    const rest = c.validators.filter((v) => v.id !== id);
    must(rest.length >= 1, "conflict", `${id} is the last validator`);
    return { ...withValidators(rest), former: new Map([...c.former, [id, gone]]) };
  },
  "rotate-validator-key": (c, ch) => {
    const id = ch.f.get("id");
    const old = c.validators.find((v) => v.id === id);
    must(old !== undefined, "conflict", `no validator ${JSON.stringify(id)} in force`);
    const raw = keyOf(ch.f.get("public_key"));
    must(bytesEqualTo(raw, old.public_key) || !keyInUse(c, raw), "conflict",
      "the public key is already in force");
    const fresh = { ...old, public_key: raw, url: ch.f.get("url") };
    return withValidators(c.validators.map((v) => (v.id === id ? fresh : v)));
  },
};

function policy(config, change, table) {
  const organisation = change.f.get("organisation");
  knownOrganisation(config, organisation);
  const updated = without(table, organisation);
  if (change.f.get("namespaces").length) updated.set(organisation, change.f.get("namespaces"));
  return updated;
}

// `config` with `change` made by the block at `height`, or Refused (conflict) if it does not
// fit; `config` itself is never changed.
export function applyChange(config, change, height) {
  const changed = APPLY[change.kind](config, change);
  const epoch = change.endsEpoch ? { epoch: config.epoch + 1, epochHeight: height } : {};
  return { ...config, ...changed, ...epoch, version: config.version + 1 };
}

// --- Proposals and approvals in block order (section 20.4) -----------------------------------

// The governance state a verifier keeps: the proposals, the latest proposal of each subject,
// and the configuration all effective changes so far give (`config`: "now" of section 20.4).
export class GovState {
  constructor(genesis) {
    this.config = configOf(genesis);
    this.proposals = new Map();
    this.subjects = new Map();
  }

  status(proposal, height) {
    if (proposal.effectiveHeight) return "effective";
    const expiry = this.config.governance.get("expiry_blocks");
    return height > proposal.height + expiry ? "expired" : "pending";
  }

  // Run the governance tx `tx` ({clientId, key, type, body}) of block `height`, `before`
  // being the configuration in force before the block; Refused with the rule's code.
  async execute(tx, height, before) {
    const admin = before.admins.get(tx.clientId);
    must(admin !== undefined, "not_admin", `${tx.clientId} is no admin in force`);
    must(votersOf(before).includes(admin.organisation), "not_voter",
      `${admin.organisation} has no vote`);
    const id = proposalId(tx);
    if (tx.type === PROPOSAL_TYPE) await this.propose(tx, id, admin.organisation, height);
    else this.approve(id, admin.organisation, height);
  }

  async propose(tx, id, organisation, height) {
    const change = parseChange(tx.body);
    await checkPossession(change, this.config.chainId);
    must(!this.proposals.has(id), "duplicate_proposal", `${id} exists`);
    const rival = this.proposals.get(this.subjects.get(change.subject));
    must(rival === undefined || this.status(rival, height) !== "pending", "conflict",
      `proposal ${rival?.id} on ${change.subject} is pending`);
    applyChange(this.config, change, height); // only whether it fits
    this.subjects.set(change.subject, id);
    this.settle({ id, change, height, approvals: [organisation], effectiveHeight: 0n }, height);
  }

  approve(id, organisation, height) {
    const proposal = this.proposals.get(id);
    must(proposal !== undefined, "unknown_proposal", `no proposal ${id}`);
    const status = this.status(proposal, height);
    must(status !== "effective", "not_pending", `${id} is already effective`);
    must(status !== "expired", "expired", `${id} expired`);
    must(!proposal.approvals.includes(organisation), "already_approved",
      `${organisation} approved`);
    this.settle({ ...proposal, approvals: [...proposal.approvals, organisation] }, height);
  }

  // The proposal's entry, and its effect once its approvals reach the quorum of `now`.
  settle(proposal, height) {
    const now = this.config;
    const voters = votersOf(now);
    const votes = proposal.approvals.filter((org) => voters.includes(org)).length;
    if (votes < govQuorum(now)) {
      this.proposals.set(proposal.id, proposal);
      return;
    }
    must(!(proposal.change.endsEpoch && now.epochHeight === height), "conflict",
      `block ${height} already ends its epoch with a change`);
    const after = applyChange(now, proposal.change, height);
    this.proposals.set(proposal.id, { ...proposal, effectiveHeight: height });
    this.config = after;
  }
}

function proposalId(tx) {
  const prefix = new Map([[PROPOSAL_TYPE, PROPOSALS], [APPROVAL_TYPE, APPROVALS]]).get(tx.type);
  must(prefix !== undefined, "schema", `a ${GOV_NAMESPACE} tx is a proposal or approval`);
  must(tx.key.startsWith(prefix), "schema", `a ${tx.type} lives under ${prefix}`);
  const id = tx.key.slice(prefix.length);
  must(!id.includes("/") && ID.test(id), "schema", "a proposal id is a lowercase identifier");
  must(tx.type === PROPOSAL_TYPE || tx.body.size === 0, "schema", "an approval's body is empty");
  return id;
}
