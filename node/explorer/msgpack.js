// Canonical MessagePack (docs/protocol.md section 1), written for the explorer's verifier.
// Values: null, booleans, BigInt integers, strings, Uint8Array (bin), arrays, and Map objects
// with string keys (a plain object is encoded like a Map of its entries). `decode` accepts only
// the canonical bytes of a value: it reads one value, then re-encodes it and compares.

export const DEPTH_MAX = 32;
const INT_MIN = -(2n ** 63n);
const UINT_MAX = 2n ** 64n - 1n;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export class Malformed extends Error {}

export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function pushBig(out, value, size) {
  for (let i = size - 1; i >= 0; i--) out.push(Number((value >> BigInt(8 * i)) & 0xffn));
}

function encodeInt(out, n) {
  if (n < INT_MIN || n > UINT_MAX) throw new Malformed(`integer ${n} out of range`);
  if (n >= 0n) {
    if (n <= 127n) out.push(Number(n));
    else if (n <= 0xffn) out.push(0xcc, Number(n));
    else if (n <= 0xffffn) { out.push(0xcd); pushBig(out, n, 2); }
    else if (n <= 0xffffffffn) { out.push(0xce); pushBig(out, n, 4); }
    else { out.push(0xcf); pushBig(out, n, 8); }
  } else if (n >= -32n) out.push(Number(n & 0xffn));
  else if (n >= -128n) out.push(0xd0, Number(n & 0xffn));
  else if (n >= -32768n) { out.push(0xd1); pushBig(out, n & 0xffffn, 2); }
  else if (n >= -(2n ** 31n)) { out.push(0xd2); pushBig(out, n & 0xffffffffn, 4); }
  else { out.push(0xd3); pushBig(out, n & UINT_MAX, 8); }
}

function lengthHeader(out, length, fix, fixMax, codes) {
  if (fix !== null && length <= fixMax) { out.push(fix + length); return; }
  const [c8, c16, c32] = codes;
  if (c8 !== null && length <= 0xff) out.push(c8, length);
  else if (length <= 0xffff) out.push(c16, length >> 8, length & 0xff);
  else { out.push(c32); pushBig(out, BigInt(length), 4); }
}

function pushBytes(out, bytes) {
  for (const b of bytes) out.push(b);
}

function entriesOf(value) {
  const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
  const keyed = entries.map(([k, v]) => {
    if (typeof k !== "string") throw new Malformed("map keys are strings");
    return [utf8.encode(k), v];
  });
  return keyed.sort((a, b) => compareBytes(a[0], b[0]));
}

function encodeInto(out, value) {
  if (value === null || value === undefined) out.push(0xc0);
  else if (value === false) out.push(0xc2);
  else if (value === true) out.push(0xc3);
  else if (typeof value === "bigint") encodeInt(out, value);
  else if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Malformed("no fractions or unsafe numbers");
    encodeInt(out, BigInt(value));
  } else if (typeof value === "string") {
    const bytes = utf8.encode(value);
    lengthHeader(out, bytes.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
    pushBytes(out, bytes);
  } else if (value instanceof Uint8Array) {
    lengthHeader(out, value.length, null, 0, [0xc4, 0xc5, 0xc6]);
    pushBytes(out, value);
  } else if (Array.isArray(value)) {
    lengthHeader(out, value.length, 0x90, 15, [null, 0xdc, 0xdd]);
    for (const item of value) encodeInto(out, item);
  } else if (typeof value === "object") {
    const entries = entriesOf(value);
    lengthHeader(out, entries.length, 0x80, 15, [null, 0xde, 0xdf]);
    for (let i = 0; i < entries.length; i++) {
      if (i > 0 && compareBytes(entries[i - 1][0], entries[i][0]) === 0) {
        throw new Malformed("duplicate map key");
      }
      lengthHeader(out, entries[i][0].length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
      pushBytes(out, entries[i][0]);
      encodeInto(out, entries[i][1]);
    }
  } else throw new Malformed(`no CityLedger value: ${typeof value}`);
}

export function encode(value) {
  const out = [];
  encodeInto(out, value);
  return Uint8Array.from(out);
}

class Reader {
  constructor(bytes, loose = false) {
    this.bytes = bytes;
    this.pos = 0;
    this.loose = loose;
  }

  take(n) {
    if (this.pos + n > this.bytes.length) throw new Malformed("truncated value");
    const part = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return part;
  }

  uint(n) {
    let v = 0n;
    for (const b of this.take(n)) v = (v << 8n) | BigInt(b);
    return v;
  }

  sint(n) {
    const v = this.uint(n);
    const top = 1n << BigInt(8 * n - 1);
    return v >= top ? v - (top << 1n) : v;
  }
}

function readStr(r, n) {
  try {
    return strictUtf8.decode(r.take(n));
  } catch (error) {
    if (error instanceof Malformed) throw error;
    throw new Malformed("a string that is not UTF-8");
  }
}

function readArray(r, n, depth) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(readValue(r, depth + 1));
  return out;
}

function readMap(r, n, depth) {
  const out = new Map();
  for (let i = 0; i < n; i++) {
    const key = readValue(r, depth + 1);
    if (typeof key !== "string") throw new Malformed("a map key that is not a string");
    // Canonical bytes never hold a key twice; a loose read keeps the last, as msgpack does.
    if (out.has(key) && !r.loose) throw new Malformed(`the map key ${JSON.stringify(key)} twice`);
    out.set(key, readValue(r, depth + 1));
  }
  return out;
}

const SIZES = { 0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4, 0xdc: 2, 0xdd: 4,
  0xde: 2, 0xdf: 4, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8 };

function readValue(r, depth) {
  if (depth > DEPTH_MAX) throw new Malformed(`nested deeper than ${DEPTH_MAX}`);
  const b = r.take(1)[0];
  if (b <= 0x7f) return BigInt(b);
  if (b >= 0xe0) return BigInt(b - 0x100);
  if (b >= 0xa0 && b <= 0xbf) return readStr(r, b - 0xa0);
  if (b >= 0x90 && b <= 0x9f) return readArray(r, b - 0x90, depth);
  if (b >= 0x80 && b <= 0x8f) return readMap(r, b - 0x80, depth);
  if (b === 0xc0) return null;
  if (b === 0xc2) return false;
  if (b === 0xc3) return true;
  const size = SIZES[b];
  if (size === undefined) throw new Malformed(`byte 0x${b.toString(16)} is no CityLedger value`);
  if (b >= 0xcc && b <= 0xcf) return r.uint(size);
  if (b >= 0xd0 && b <= 0xd3) return r.sint(size);
  const n = Number(r.uint(size));
  if (n > r.bytes.length - r.pos) throw new Malformed("truncated value");
  if (b <= 0xc6) return r.take(n).slice();
  if (b <= 0xdb) return readStr(r, n);
  if (b <= 0xdd) return readArray(r, n, depth);
  return readMap(r, n, depth);
}

// The value of `bytes` if they are its canonical encoding and at most `maxBytes` long.
export function decode(bytes, maxBytes) {
  if (bytes.length > maxBytes) throw new Malformed(`larger than ${maxBytes} bytes`);
  const r = new Reader(bytes);
  const value = readValue(r, 0);
  if (r.pos !== bytes.length) throw new Malformed("trailing bytes after the value");
  if (!bytesEqual(encode(value), bytes)) throw new Malformed("not the canonical encoding");
  return value;
}

// Any MessagePack encoding of a value (a proof bundle file need not be canonical: every hashed
// part inside it is carried as its own canonical bytes).
export function decodeLoose(bytes) {
  const r = new Reader(bytes, true);
  const value = readValue(r, 0);
  if (r.pos !== bytes.length) throw new Malformed("trailing bytes after the value");
  return value;
}
