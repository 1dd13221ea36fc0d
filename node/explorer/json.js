// A strict JSON reader for proof bundle files (docs/protocol.md section 14.1): no field twice,
// integers only (as BigInt), like the reference verifier's; objects are read as Map.

export const JSON_DEPTH_MAX = 64;

// What is wrong with a file that is not such JSON.
export class BadJson extends Error {}

const fail = (reason) => {
  throw new BadJson(reason);
};

export class Json {
  constructor(text) {
    this.text = text;
    this.pos = 0;
  }

  ws() {
    while (/[ \t\n\r]/.test(this.text[this.pos] ?? "")) this.pos++;
  }

  value(depth) {
    if (depth > JSON_DEPTH_MAX) fail("not JSON: nested too deeply");
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
