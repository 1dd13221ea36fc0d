// The explorer's pages and their routes (the part of the address after #), and the live
// event stream: a block committed while the page is open appears without a reload.

import { $ } from "./dom.js";
import { showClaims, showFunds, showRisks } from "./fiscal.js";
import { addLiveBlock, search, showBlock, showBlocks, showHistory, showOverview, showTx }
  from "./pages.js";
import { showGovernance, showMembers } from "./governance.js";
import { check, prefill } from "./verifypage.js";

const ROUTES = [
  [/^#\/overview$/, "overview", () => showOverview()],
  [/^#\/blocks$/, "blocks", () => showBlocks()],
  [/^#\/block\/([0-9]{1,19}|latest)$/, "block", (m) => showBlock(m[1])],
  [/^#\/tx\/([0-9a-f]{64})$/, "tx", (m) => showTx(m[1])],
  [/^#\/record$/, "record", () => undefined],
  [/^#\/record\/(.+)$/, "record", (m) => showHistory(decodeURIComponent(m[1]))],
  [/^#\/funds$/, "funds", () => showFunds()],
  [/^#\/risks$/, "risks", () => showRisks()],
  [/^#\/claims$/, "claims", () => showClaims()],
  [/^#\/members$/, "members", () => showMembers()],
  [/^#\/members\/([0-9]{1,19})$/, "members", (m) => showMembers(m[1])],
  [/^#\/governance$/, "governance", () => showGovernance()],
  [/^#\/verify$/, "verify", () => undefined],
  [/^#\/verify\/([0-9a-f]{64})$/, "verify", (m) => prefill(m[1])],
  [/^#\/signin$/, "signin", () => undefined],
];
let current = null;
let events = null;
let lastHeight = 0;

async function route() {
  const hash = location.hash || "#/overview";
  const found = ROUTES.map(([re, page, show]) => [re.exec(hash), page, show]).find(([m]) => m);
  const [match, page, show] = found ?? [null, "overview", () => showOverview()];
  for (const section of document.querySelectorAll("section.page")) {
    section.hidden = section.id !== `page-${page}`;
  }
  current = page;
  document.body.dataset.page = page;
  document.body.dataset.loaded = "false";
  await show(match);
  document.body.dataset.loaded = "true";
}

// One stream for the page's life; the browser reconnects with the last event id by itself.
function follow() {
  if (events !== null) events.close();
  events = new EventSource("/v1/events");
  document.body.dataset.live = "connecting";
  events.addEventListener("open", () => {
    document.body.dataset.live = "open"; // the node follows the chain for this page from now
  });
  events.addEventListener("block", (event) => {
    const height = JSON.parse(event.data).height;
    lastHeight = Math.max(lastHeight, height);
    document.body.dataset.liveHeight = String(lastHeight);
    if (current === "blocks") addLiveBlock(height);
    if (current === "overview" && $("ov-height")) $("ov-height").textContent = String(lastHeight);
  });
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("blocks-status").textContent = "searching…";
  try {
    location.hash = await search($("search").value);
  } catch (error) {
    $("blocks-status").textContent = `not found: ${error.message}`;
  }
});
$("history-form").addEventListener("submit", (event) => {
  event.preventDefault();
  location.hash = `#/record/${$("history-key").value.trim()}`;
});
$("funds-form").addEventListener("submit", (event) => {
  event.preventDefault();
  route();
});
$("risks-form").addEventListener("submit", (event) => {
  event.preventDefault();
  route();
});
$("members-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const height = $("members-height").value.trim();
  if (height && !/^[0-9]{1,19}$/.test(height)) {
    $("members-status").textContent = "enter a block height (a whole number), or nothing for the head";
    return;
  }
  location.hash = height ? `#/members/${height}` : "#/members";
});
$("risks-more").addEventListener("click", () => showRisks(true));
$("history-more").addEventListener("click", () => showHistory($("history-key").value, true));
window.addEventListener("hashchange", route);
// Signing in or out changes what every page may show, and what the stream carries.
document.addEventListener("identity", () => {
  follow();
  if (current !== "signin") route();
});

// For the test suite and for auditors' own scripts: the verifier without the file inputs.
window.cityledgerVerify = async (genesisText, bundleBase64) => {
  const bundle = Uint8Array.from(atob(bundleBase64), (c) => c.charCodeAt(0));
  const result = await check(genesisText, bundle);
  return { valid: result.valid, reason: result.reason ?? null };
};

follow();
route();
