// Small helpers of the explorer's pages: elements built from text (never from HTML, so a
// record's value can hold nothing that runs), and reads of the node's API as the signed-in
// identity (the session cookie) or anonymously.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function link(href, text) {
  return el("a", { href }, text);
}

export function table(headings, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

// A definition list of [label, value] pairs.
export function facts(pairs) {
  return el("dl", {}, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

export function short(hex) {
  return typeof hex === "string" && hex.length > 16 ? `${hex.slice(0, 12)}…` : hex;
}

export function time(ms) {
  return new Date(Number(ms)).toISOString().replace("T", " ").replace(".000Z", "Z");
}

export class ApiRefusal extends Error {
  constructor(status, doc) {
    super(`${status} ${doc.error}: ${doc.reason}`);
    this.status = status;
    this.code = doc.error;
  }
}

// GET a node route as JSON; ApiRefusal with the node's error object when refused.
export async function api(path) {
  const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
  const text = await response.text();
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = { error: `http_${response.status}`, reason: text.slice(0, 200) };
  }
  if (!response.ok) throw new ApiRefusal(response.status, doc);
  return doc;
}

// What a refusal means for the reader of the page.
export function explain(error) {
  if (!(error instanceof ApiRefusal)) return `failed: ${error.message}`;
  if (error.status === 401) return `${error.message} — sign in to read this`;
  if (error.status === 403) return `${error.message} — your identity may not read this`;
  return error.message;
}

export function recordPath(route, key) {
  return `/v1/${route}/${key.split("/").map(encodeURIComponent).join("/")}`;
}
