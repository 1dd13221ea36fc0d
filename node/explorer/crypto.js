// Hashes, strict Ed25519 and RFC 9162 inclusion proofs for the explorer's verifier, with
// WebCrypto (SHA-256, Ed25519) and this file's own code (docs/protocol.md sections 3, 6).

export const DIGEST_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const INCLUSION_PROOF_HASHES_MAX = 64;

const P = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const D = (-121665n * modPow(121666n, P - 2n, P)) % P + P;
const Y8 = 0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n;
const SMALL_ORDER_Y = new Set([0n, 1n, P - 1n, Y8, P - Y8]);

export const DOMAIN = {
  TX: "cityledger/tx/v1\0",
  COMMIT: "cityledger/commit/v1\0",
  GENESIS: "cityledger/genesis/v1\0",
  POSSESSION: "cityledger/possession/v1\0",
};

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-f]*$/.test(text)) {
    return null;
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function bytesEqualTo(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function modPow(base, exp, mod) {
  let result = 1n;
  let b = base % mod;
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % mod;
    b = (b * b) % mod;
    e >>= 1n;
  }
  return result;
}

function littleEndian(bytes) {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

// Section 3.1: canonical, on the curve, not of small order; null if accepted, else the reason.
export function publicKeyProblem(key) {
  if (key.length !== 32) return "not 32 bytes";
  const encoded = littleEndian(key);
  const y = encoded & ((1n << 255n) - 1n);
  const sign = encoded >> 255n;
  if (y >= P) return "not a canonical point encoding";
  const y2 = (y * y) % P;
  const x2 = ((y2 - 1n + P) * modPow((D * y2 + 1n) % P, P - 2n, P)) % P;
  if (x2 !== 0n && modPow(x2, (P - 1n) / 2n, P) !== 1n) return "not a point of the curve";
  if (x2 === 0n && sign === 1n) return "not a canonical point encoding";
  if (SMALL_ORDER_Y.has(y)) return "a point of small order";
  return null;
}

// Section 3.1 rules 1-3 here, rule 4 (the cofactorless equation) by WebCrypto's Ed25519.
export async function verifyEd25519(publicKey, domain, payload, signature) {
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_BYTES) return false;
  const rY = littleEndian(signature.subarray(0, 32)) & ((1n << 255n) - 1n);
  if (rY >= P || SMALL_ORDER_Y.has(rY)) return false;
  if (littleEndian(signature.subarray(32)) >= L) return false;
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, [
    "verify",
  ]);
  const message = concat(new TextEncoder().encode(domain), payload);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

// RFC 9162 section 2.1.3.2: does `proof` show `leaf` at `index` of the tree `root` of `size`?
export async function verifyInclusion(leaf, index, size, proof, root) {
  if (index >= size || proof.length > INCLUSION_PROOF_HASHES_MAX) return false;
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  let r = await sha256(concat(Uint8Array.of(0), leaf));
  for (const p of proof) {
    if (sn === 0n) return false;
    if (fn & 1n || fn === sn) {
      r = await nodeHash(p, r);
      while (!(fn & 1n || fn === 0n)) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && bytesEqualTo(r, root);
}
