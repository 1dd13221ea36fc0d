// Sign-in with a ledger identity: the key file is read and used in this page only.
// The page asks the node for a challenge, signs SESSION_TAG || encode([chain_id, identity,
// challenge]) with WebCrypto Ed25519 (docs/protocol.md section 16.4), and the node answers
// with a session cookie bound to that identity. Nothing is loaded from outside the node.

const SESSION_TAG = new TextEncoder().encode("cityledger/session/v1\0");
const KEY_FILE_BYTES_MAX = 4096;

const $ = (id) => document.getElementById(id);

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The canonical MessagePack of the few kinds the session payload uses (section 1.2).
function header(small, base, length, formats) {
  if (small !== null && length <= small) return [base + length];
  for (const [limit, code, size] of formats) {
    if (length <= limit) {
      const out = [code];
      for (let i = size - 1; i >= 0; i--) out.push((length >> (8 * i)) & 0xff);
      return out;
    }
  }
  throw new Error("value too long");
}

function encodeStr(text) {
  const bytes = new TextEncoder().encode(text);
  return [...header(31, 0xa0, bytes.length, [[0xff, 0xd9, 1], [0xffff, 0xda, 2]]), ...bytes];
}

function encodeBin(bytes) {
  return [...header(null, 0, bytes.length, [[0xff, 0xc4, 1], [0xffff, 0xc5, 2]]), ...bytes];
}

export function sessionMessage(chainId, identity, challenge) {
  const items = [...encodeStr(chainId), ...encodeStr(identity), ...encodeBin(challenge)];
  return new Uint8Array([...SESSION_TAG, 0x93, ...items]);
}

function pemToDer(text) {
  const match = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/.exec(text);
  if (!match) {
    throw new Error("the file is not an unencrypted PKCS#8 PEM key (BEGIN PRIVATE KEY); " +
      "an encrypted key cannot be used in the browser");
  }
  const binary = atob(match[1].replace(/\s+/g, ""));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

async function answer(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: `http_${response.status}`, reason: text.slice(0, 200) };
  }
}

async function signIn() {
  const status = $("signin-status");
  status.textContent = "signing in…";
  try {
    const identity = $("identity").value.trim();
    const file = $("keyfile").files[0];
    if (!identity || !file) throw new Error("enter your identity and choose your key file");
    if (file.size > KEY_FILE_BYTES_MAX) throw new Error("that file is too large to be a key");
    const der = pemToDer(await file.text());
    const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
    const challengeResponse = await fetch("/v1/auth/challenge", { cache: "no-store" });
    const issued = await answer(challengeResponse);
    if (!challengeResponse.ok) throw new Error(`${issued.error}: ${issued.reason}`);
    const message = sessionMessage(issued.chain_id, identity, hexToBytes(issued.challenge));
    const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, message));
    const opened = await fetch("/v1/auth/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ identity, challenge: issued.challenge, signature: bytesToHex(signature) }),
    });
    const session = await answer(opened);
    if (!opened.ok) throw new Error(`${session.error}: ${session.reason}`);
    showReader(session);
    status.textContent = "signed in";
    document.dispatchEvent(new Event("identity"));
  } catch (error) {
    status.textContent = `sign-in failed: ${error.message}`;
  }
}

function showReader(session) {
  $("who").textContent = `${session.identity} (${session.organisation}, ${session.role})`;
  const reads = session.reads.includes("*") ? ["everything"] : session.reads;
  $("reads").textContent = [...reads, ...session.public_namespaces.map((n) => `${n} (public)`)]
    .join(", ");
  $("reader").hidden = false;
  $("identity-line").textContent = `signed in as ${session.identity} (${session.role})`;
}

async function read(path) {
  const status = $("read-status");
  status.textContent = "reading…";
  const response = await fetch(path, { cache: "no-store" });
  const value = await answer(response);
  status.textContent = response.ok ? `${response.status} ok` : `${response.status} ${value.error}`;
  $("read-result").textContent = JSON.stringify(value, null, 2);
}

function recordPath(key) {
  return "/v1/records/" + key.split("/").map(encodeURIComponent).join("/");
}

async function signOut() {
  await fetch("/v1/auth/session", { method: "DELETE" });
  $("reader").hidden = true;
  $("signin-status").textContent = "signed out";
  $("identity-line").textContent = "anonymous";
  document.dispatchEvent(new Event("identity"));
}

// A session opened earlier (the cookie outlives a reload): say who is signed in.
async function resume() {
  const response = await fetch("/v1/auth/session", { cache: "no-store" });
  if (response.ok) showReader(await answer(response));
}

$("signin-button").addEventListener("click", signIn);
$("signout-button").addEventListener("click", signOut);
$("record-button").addEventListener("click", () => read(recordPath($("record-key").value.trim())));
$("block-button").addEventListener("click", () =>
  read(`/v1/blocks/${encodeURIComponent($("block-height").value.trim() || "latest")}`));
resume().finally(() => {
  document.body.dataset.ready = "true";
});
