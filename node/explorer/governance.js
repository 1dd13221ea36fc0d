// Membership and governance history: the configuration in force at a height (validators,
// clients, admins, retired ids, policies) from /v1/config, and every proposal with who
// proposed and approved it, at which heights, and when its change took effect, from
// /v1/governance/proposals and the history of its `_gov/` records (docs/protocol.md 19.7a, 20).

import { $, api, ApiRefusal, el, explain, facts, link, recordPath, short, table } from "./dom.js";

const APPROVALS_PAGE = 100; // approvals read per proposal (one per voting organisation at most)

export async function showMembers(height = null) {
  const out = $("members");
  out.replaceChildren();
  $("members-height").value = height ?? "";
  $("members-status").textContent = "reading…";
  try {
    const config = await api(`/v1/config${height === null ? "" : `?height=${height}`}`);
    out.append(
      facts([
        ["at height", el("span", { id: "members-at" }, String(config.height))],
        ["epoch", el("span", { id: "members-epoch" }, String(config.epoch))],
        ["configuration version", `${config.version} (changes in force since genesis)`],
        ["last change at height", config.version ? String(config.since) : "none: the genesis"],
        ["governance", `${config.policies.governance.quorum} of the voting organisations `
          + `(${config.policies.governance.voters.join(", ")}) approve a change; a proposal `
          + `expires after ${config.policies.governance.expiry_blocks} blocks`],
      ]),
      el("h3", {}, `Validators (${config.validators.length})`),
      named(table(["index", "validator", "organisation", "kind", "url", "public key"],
        config.validators.map((v, i) => [String(i), v.id, v.organisation, v.kind, v.url,
          el("code", {}, short(v.public_key))])), "members-validators"),
      el("h3", {}, `Clients (${config.clients.length})`),
      named(table(["client", "organisation", "role", "public key"], config.clients.map((c) =>
        [c.id, c.organisation, c.role, el("code", {}, short(c.public_key))])), "members-clients"),
      el("h3", {}, `Admins (${config.admins.length})`),
      named(table(["admin", "organisation", "public key"], config.admins.map((a) =>
        [a.id, a.organisation, el("code", {}, short(a.public_key))])), "members-admins"),
      el("h3", {}, "Retired ids"),
      el("p", { id: "members-retired" }, config.retired.length ? config.retired.join(", ")
        : "none"),
      el("h3", {}, "Policies"),
      named(table(["organisation", "writes", "reads"], policyRows(config.policies)),
        "members-policies"),
      el("p", {}, `Public namespaces: ${config.policies.public.join(", ") || "none"}`));
    $("members-status").textContent = "ok";
  } catch (error) {
    $("members-status").textContent = explain(error);
  }
}

function named(node, id) {
  node.id = id;
  return node;
}

function policyRows(policies) {
  const orgs = [...new Set([...Object.keys(policies.write), ...Object.keys(policies.read)])];
  return orgs.sort().map((org) => [org, (policies.write[org] ?? []).join(", ") || "—",
    (policies.read[org] ?? []).join(", ") || "—"]);
}

export async function showGovernance() {
  const out = $("governance");
  out.replaceChildren();
  $("governance-status").textContent = "reading…";
  try {
    const doc = await api("/v1/governance/proposals?all=true");
    const proposals = [...doc.proposals].sort((a, b) => b.height - a.height || (a.id < b.id ? -1 : 1));
    for (const p of proposals) out.append(await proposalSection(p));
    $("governance-status").textContent = `${proposals.length} proposals, newest first`
      + (doc.truncated ? " (the first 1 000 by id)" : "");
  } catch (error) {
    $("governance-status").textContent = explain(error);
  }
}

async function proposalSection(p) {
  const { id, change } = p.change;
  const effect = p.effective_height === null ? `not in force (${p.status})`
    : link(`#/members/${p.effective_height}`, `in force after block ${p.effective_height}`);
  const section = el("section", { class: "proposal", "data-id": p.id, "data-status": p.status },
    el("h3", {}, `${p.id}: ${change}${id ? ` ${id}` : ""}`),
    facts([
      ["status", el("span", { class: "proposal-status" }, p.status)],
      ["change", el("pre", {}, JSON.stringify(p.change, null, 2))],
      ["proposed by", el("span", {}, `${p.proposer} (${p.organisation}) in block `,
        link(`#/block/${p.height}`, String(p.height)))],
      ["approvals", `${p.approvals.join(", ")} (${p.approvals.length} of ${p.quorum} needed)`],
      ["effect", el("span", { class: "proposal-effect" }, effect)],
      ["expires", p.effective_height === null ? `after block ${p.expires_after}` : "—"],
    ]));
  section.append(el("h4", {}, "Approvals"), await approvalsTable(p));
  return section;
}

// Who approved and when: the versions of the proposal's approval record (an approval is one
// version each), for an identity that may read the `_gov/` namespace; else the organisations.
async function approvalsTable(p) {
  try {
    const page = await api(`${recordPath("history", `_gov/approvals/${p.id}`)}?limit=${APPROVALS_PAGE}`);
    const t = table(["approved by", "block", "tx"], page.versions.map((v) => [v.client_id,
      link(`#/block/${v.height}`, String(v.height)), link(`#/tx/${v.tx_id}`,
        el("code", {}, short(v.tx_id)))]));
    t.className = "approvals";
    return t;
  } catch (error) {
    if (!(error instanceof ApiRefusal)) throw error;
    if (error.status === 404) return el("p", { class: "approvals" }, "no approval beyond the proposer's");
    return el("p", { class: "approvals" }, `approving admins: ${explain(error)}`);
  }
}
