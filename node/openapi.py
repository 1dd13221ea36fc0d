"""The OpenAPI 3.1 document of the node's HTTP API (served at /v1/openapi.json).

It describes every route `node.app.add_routes` registers (a test holds the two together) in
JSON form; every route also speaks msgpack (`Content-Type`/`Accept: application/msgpack`),
where byte strings are msgpack bin instead of hex. Pure data: no I/O.
"""

from typing import Any, Final

from ledger.kinds.base import REASONS
from ledger.kinds.risks import ALERT_KINDS
from ledger.kinds.schema import kind_view
from ledger.kinds.table import KINDS
from ledger.primitives import BLOCK_TXS_MAX
from ledger.proofs import BUNDLE_FORMAT, BUNDLE_FORMAT_GOVERNANCE
from node import operation_ids, votes

VERSION: Final = "0.1.0"
_HEX: Final = {"type": "string", "pattern": "^([0-9a-f]{2})*$", "description": "bytes, as hex"}
_HASH: Final = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "32 bytes, as hex"}
_INT: Final = {"type": "integer", "minimum": 0}
_TX_COUNT: Final = _INT | {
    "maximum": BLOCK_TXS_MAX,
    "description": "the block's number of txs: its tx tree's size",
}
_REASONS: Final = [
    "malformed", "too_large", "wrong_chain", "unknown_client", "forbidden_namespace",
    "stale_timestamp", "future_timestamp", "bad_signature", "duplicate", "pool_full",
    "unchecked", *REASONS,
]  # fmt: skip
_OUTCOME: Final = {
    "outcome": {"type": ["string", "null"], "enum": ["accepted", "refused", None],
                "description": "null until committed"},
    "reason": {"type": ["string", "null"], "enum": [*REASONS, None],
               "description": "the rule's code when refused (see /v1/kinds)"},
}  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_TX_FIELDS: Final = {
    "chain_id": {"type": "string"}, "client_id": {"type": "string"}, "nonce": _INT,
    "timestamp_ms": _INT, "key": {"type": "string"}, "type": {"type": "string"},
    "body": {"type": "object", "description": "plain values only: no floats"},
    "signature": _HEX,
}  # fmt: skip


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _tx_schemas() -> dict[str, Any]:
    status = _obj(
        ["tx_id", "status", "height", "index"], tx_id=_HASH,
        status={"type": "string", "enum": ["pending", "committed", "expired"]},
        height={"type": ["integer", "null"]}, index={"type": ["integer", "null"]}, **_OUTCOME,
    )  # fmt: skip
    batch = _array(_ref("TransactionIn")) | {"minItems": 1, "maxItems": 10000}
    fields = _TX_FIELDS | {"body": _ref("RecordBody")}
    return {
        "Error": _obj(["error", "reason"], error={"type": "string"}, reason={"type": "string"},
                      tx_id={"type": ["string", "null"]}),
        "RecordBody": {"type": "object", "additionalProperties": True,
                       "description": "plain values only: no floats"},
        "RawTransaction": _obj(["raw"], raw={**_HEX, "description": "the canonical tx bytes"}),
        "TransactionFields": _obj(list(fields), **fields),
        "TransactionIn": {"oneOf": [_ref("RawTransaction"), _ref("TransactionFields")]},
        "Batch": _obj(["transactions"], transactions=batch),
        "Submission": {"oneOf": [
            _ref("RawTransaction"), _ref("TransactionFields"), _ref("Batch"),
        ]},
        "TxStatus": status,
        "Rejection": _obj(
            ["index", "error", "reason"], index=_INT, tx_id={"type": ["string", "null"]},
            error={"type": "string", "enum": _REASONS}, reason={"type": "string"},
        ),
        "SubmitResult": _obj(
            ["accepted", "rejected"], accepted=_array(_ref("TxStatus")),
            rejected=_array(_ref("Rejection")), **status["properties"],
        ) | {"description": "for a single tx, also the fields of its TxStatus"},
        "Transaction": _obj([*fields, "tx_id", "raw"], **fields, tx_id=_HASH, raw=_HEX),
        "TxLookup": status | {"properties": status["properties"] | {"tx": _ref("Transaction")}},
    }  # fmt: skip


def _block_schemas() -> dict[str, Any]:
    version = _obj(
        ["type", "value", "tx_id", "height", "index"], type={"type": "string"},
        value=_ref("RecordBody"), tx_id=_HASH, height=_INT, index=_INT,
        client_id={"type": "string"}, timestamp_ms=_INT,
    )  # fmt: skip
    raw_block = _obj(["height", "block", "certificate"], height=_INT, block=_HEX,
                     certificate=_HEX)  # fmt: skip
    return {
        "Vote": _obj(["validator", "validator_id", "signature"], validator=_INT,
                     validator_id={"type": ["string", "null"]}, signature=_HEX),
        "Header": _obj(
            ["height", "prev_hash", "tx_root", "tx_count", "history_root", "timestamp_ms", "view",
             "proposer"], height=_INT, prev_hash=_HASH, tx_root=_HASH, tx_count=_TX_COUNT,
            history_root=_HASH, timestamp_ms=_INT, view=_INT, proposer=_INT,
            outcome_root=_HASH, raw=_HEX,
        ),
        "Certificate": _obj(
            ["height", "block_hash", "view", "signers", "votes"], height=_INT, block_hash=_HASH,
            view=_INT, signers=_array({"type": ["string", "null"]}), votes=_array(_ref("Vote")),
            raw=_HEX,
        ),
        "Block": _obj(
            ["height", "hash", "header", "txs", "certificate"], height=_INT, hash=_HASH,
            header=_ref("Header"), txs=_array(_ref("Transaction")),
            outcomes=_array(_obj(["outcome", "reason"], **_OUTCOME)),
            certificate=_ref("Certificate"), epoch=_INT, proposer_id={"type": ["string", "null"]},
        ),
        "Version": version,
        "Record": version | {"properties": {"key": {"type": "string"}} | version["properties"]},
        "RecordPage": _obj(
            ["records", "next_cursor"],
            records=_array(_ref("Record")),
            next_cursor={"type": ["string", "null"],
                         "description": "pass as ?cursor= for the next page; null: no more"},
        ),
        "History": _obj(
            ["key", "versions", "next_cursor", "truncated"], key={"type": "string"},
            versions=_array(_ref("Version")), next_cursor={"type": ["string", "null"]},
            truncated={"type": "boolean"},
        ),
        "RawBlock": raw_block,
        "ChainPage": _obj(["head", "blocks"], head=_INT, blocks=_array(_ref("RawBlock"))),
    }  # fmt: skip


def _proof_schemas() -> dict[str, Any]:
    checkpoint = _obj(
        ["height", "block_hash", "history_root", "header", "certificate"], height=_INT,
        block_hash=_HASH, history_root=_HASH, header=_HEX, certificate=_HEX,
    )  # fmt: skip
    anchor = checkpoint | {
        "properties": checkpoint["properties"] | {"history_proof": _array(_HASH)},
        "required": [*checkpoint["required"], "history_proof"],
    }
    vote = _obj(["validator", "signature"], validator=_INT, signature=_HEX,
                validator_id={"type": ["string", "null"]})  # fmt: skip
    bundle = {
        "format": {"type": "string", "enum": [BUNDLE_FORMAT, BUNDLE_FORMAT_GOVERNANCE]},
        "chain_id": {"type": "string"}, "genesis_hash": _HASH, "tx_id": _HASH, "tx": _HEX,
        "height": _INT, "index": _INT, "tx_count": _TX_COUNT, "header": _HEX, "block_hash": _HASH,
        "tx_proof": _array(_HASH), "certificate": _HEX,
        "anchor": {"oneOf": [{"type": "null"}, _ref("Anchor")]},
        "outcome": {"type": "string", "enum": ["", *REASONS]}, "outcome_proof": _array(_HASH),
    }  # fmt: skip
    gov_tx = _obj(["index", "tx", "tx_proof", "outcome_proof"], index=_INT, tx=_HEX,
                  tx_proof=_array(_HASH), outcome_proof=_array(_HASH))  # fmt: skip
    gov_block = _obj(["height", "header", "block_hash", "certificate", "txs"], height=_INT,
                     header=_HEX, block_hash=_HASH, certificate=_HEX,
                     txs=_array(gov_tx))  # fmt: skip
    return {
        "Checkpoint": checkpoint,
        "Anchor": anchor,
        "CheckpointVote": vote,
        "StableCheckpoint": _obj(["chain_id", "height", "block_hash", "votes"],
                                 chain_id={"type": "string"}, height=_INT, block_hash=_HASH,
                                 votes=_array(_ref("CheckpointVote"))),
        "Consistency": _obj(
            ["from", "to", "consistency_proof", "inclusion_proof"], to=_ref("Checkpoint"),
            consistency_proof=_array(_HASH), inclusion_proof=_array(_HASH),
            **{"from": _ref("Checkpoint")},
        ),
        "ProofBundle": _obj(list(bundle), **bundle, governance=_array(gov_block)),
    }  # fmt: skip


def _status_schema() -> dict[str, Any]:
    peer = _obj(["index", "id", "url"], index=_INT, id={"type": "string"},
                url={"type": "string"}, queued=_INT, up={"type": "boolean"})  # fmt: skip
    return _obj(
        ["node_id", "view", "primary", "height", "head_hash", "mempool", "peers"],
        node_id={"type": "string"}, index={"type": ["integer", "null"]},
        chain_id={"type": "string"}, validator={"type": "boolean"},
        not_validator_since={"type": ["integer", "null"]},
        genesis_hash=_HASH, view=_INT, primary=_INT, in_view_change={"type": "boolean"},
        height=_INT, head_hash=_HASH, mempool=_INT, mempool_free=_INT,
        running={"type": "boolean"}, peers=_array(peer), ready={"type": "boolean"},
        not_ready={"type": ["string", "null"]}, catching_up={"type": "boolean"},
        quorum=_obj(["reachable", "needed"], reachable=_INT, needed=_INT), epoch=_INT,
    )  # fmt: skip


def _schemas() -> dict[str, Any]:
    return {
        **_tx_schemas(), **_block_schemas(), **_proof_schemas(), "Status": _status_schema(),
        **_auth_schemas(), **_fiscal_schemas(), **_governance_schemas(), "Votes": votes.SCHEMA,
    }  # fmt: skip


def _governance_schemas() -> dict[str, Any]:
    """The configuration in force and proposals (docs/protocol.md section 20)."""
    text, table = {"type": "string"}, {"type": "object"}
    named = _obj(["id", "organisation", "public_key"], id=text, organisation=text,
                 public_key=_HASH, role=text, kind=text, url=text)  # fmt: skip
    return {
        "Config": _obj(
            ["height", "epoch", "validators", "clients", "admins", "policies", "params"],
            height=_INT, epoch=_INT, version=_INT, since=_INT, validators=_array(named),
            clients=_array(named), admins=_array(named), retired=_array(text), policies=table,
            params=table,
        ),
        "ConfigProof": _obj(["chain_id", "genesis_hash", "height", "governance"],
                            chain_id=text, genesis_hash=_HASH, height=_INT,
                            governance=_array(table)),
        "Proposal": _obj(
            ["id", "status", "approvals", "effective_height"], id=text, change=table,
            proposer=text, organisation=text, height=_INT,
            status={"type": "string", "enum": ["pending", "effective", "expired"]},
            approvals=_array(text), quorum=_INT, expires_after=_INT,
            effective_height={"type": ["integer", "null"]},
        ),
        "Proposals": _obj(["proposals", "truncated"], proposals=_array(_ref("Proposal")),
                          truncated={"type": "boolean"}),
    }  # fmt: skip


def _governance_paths() -> dict[str, Any]:
    height = [_param("height", "query", _INT, required=False)]
    every = [_param("all", "query", {"type": "boolean"}, required=False)]
    one = [_param("id", "path", {"type": "string"})]
    return {
        "/v1/config": _get("The configuration in force after block ?height= (default: the "
                           "head), with its epoch", _json("Config", "found"), 400, 401, 404,
                           503, params=height),
        "/v1/config/proof": _get("Anyone: the certified governance txs from which a client "
                                 "derives the configuration in force from the genesis alone "
                                 "(protocol 14.6)", _json("ConfigProof", "found"), 422, 503),
        "/v1/governance/proposals": _get("Governance proposals: pending ones, or ?all=true",
                                         _json("Proposals", "found"), 400, 401, 503,
                                         params=every),
        "/v1/governance/proposals/{id}": _get("One proposal: status, approvals, effect height",
                                              _json("Proposal", "found"), 400, 401, 404, 503,
                                              params=one),
    }  # fmt: skip


def _fiscal_schemas() -> dict[str, Any]:
    """The kinds' views and, per kind, its record body's schema (`body.<type>`), which a
    typed tx's body must follow (GET /v1/kinds/{type} serves the same)."""
    text, cents = {"type": "string"}, _INT
    rule = _obj(["code", "description"], code={"type": "string", "enum": REASONS}, description=text)
    bodies = {
        f"body.{kind.type}": {
            k: v for k, v in kind_view(kind)["schema"].items() if k not in ("$schema", "$id")
        }
        for kind in KINDS.values()
    }
    return bodies | {
        "Kind": _obj(
            ["type", "namespace", "description", "final", "schema", "rules"], type=text,
            namespace=text, description=text, final={"type": "boolean"},
            schema={"type": "object", "description": "the record body's JSON Schema"},
            rules=_array(rule),
        ),
        "Kinds": _obj(["kinds"], kinds=_array(_ref("Kind"))),
        "BudgetLine": _obj(
            ["line", "appropriated", "allocated", "spent", "remaining"], line=text,
            appropriation=text, department={"type": ["string", "null"]},
            fiscal_year={"type": ["integer", "null"]}, appropriated=cents, allocated=cents,
            spent=cents, remaining=cents,
        ),
        "BudgetLines": _obj(["lines", "truncated"], lines=_array(_ref("BudgetLine")),
                            truncated={"type": "boolean"}),
        "Alert": _obj(["kind", "evidence", "height"], kind={"type": "string",
                      "enum": list(ALERT_KINDS)}, evidence=_array(_HASH), height=_INT,
                      detail=text),
        "Alerts": _obj(["alerts", "next_cursor"], alerts=_array(_ref("Alert")),
                       next_cursor={"type": ["string", "null"], "description":
                                    "pass as ?cursor= for the next page; null: no more"}),
    }  # fmt: skip


def _fiscal_paths() -> dict[str, Any]:
    kind = [_param("type", "path", {"type": "string", "enum": list(KINDS)})]
    line = [_param("key", "path", {"type": "string"})]
    prefix = [_param("prefix", "query", {"type": "string"}, required=False)]
    risks = [
        _param("kind", "query", {"type": "string", "enum": list(ALERT_KINDS)}, required=False),
        _param("from", "query", _INT | {"minimum": 1}, required=False),
        _param("cursor", "query", {"type": "string", "pattern": "^[0-9a-f]{20}$"},
               required=False),
        _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
               required=False),
    ]  # fmt: skip
    return {
        "/v1/kinds": _get("Every record kind: JSON Schema, rules, reason codes (anonymous)",
                          _json("Kinds", "found")),
        "/v1/kinds/{type}": _get("One record kind (anonymous)", _json("Kind", "found"), 404,
                                 params=kind),
        "/v1/budget/{key}": _get("A budget line (a budget.allocation's key): appropriated, "
                                 "allocated, spent, remaining, in cents",
                                 _json("BudgetLine", "found"), 400, 401, 403, 404, 503,
                                 params=line),
        "/v1/budget": _get("Budget lines whose keys start with ?prefix=", _json(
            "BudgetLines", "found"), 400, 401, 403, 503, params=prefix),
        "/v1/risks": _get("Risk alerts with their evidence tx ids, in height order", _json(
            "Alerts", "found"), 400, 401, 503, params=risks),
    }  # fmt: skip


def _auth_schemas() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "Challenge": _obj(["challenge", "chain_id", "ttl_ms"], challenge=_HEX, chain_id=text,
                          ttl_ms=_INT),
        "SignIn": _obj(["identity", "challenge", "signature"], identity=text, challenge=_HEX,
                       signature=_HEX),
        "Session": _obj(
            ["identity", "organisation", "role", "reads", "public_namespaces"], identity=text,
            organisation=text, role={"type": "string", "enum": ["clerk", "auditor", "validator"]},
            reads=_array(text), public_namespaces=_array(text),
            expires_ms={"type": ["integer", "null"]},
        ),
    }  # fmt: skip


def _security() -> dict[str, Any]:
    """Signed requests (docs/protocol.md section 16): four headers, or a browser session."""
    headers = ("CityLedger-Identity", "CityLedger-Timestamp", "CityLedger-Nonce",
               "CityLedger-Signature")  # fmt: skip
    schemes: dict[str, Any] = {
        name.split("-")[1].lower(): {"type": "apiKey", "in": "header", "name": name}
        for name in headers
    }
    schemes["session"] = {"type": "apiKey", "in": "cookie", "name": "cityledger_session"}
    return schemes


def _auth_paths() -> dict[str, Any]:
    html = {"text/html": {"schema": {"type": "string"}}}
    sign_in = {
        "summary": "Open a browser session: the identity's signature over a challenge",
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref("SignIn")}}},
        "responses": {"200": _json("Session", "signed in: the cookie is set"),
                      **_errors(400, 401, 413, 415, 503)},
    }  # fmt: skip
    sign_out = {"summary": "End the browser session", "responses": {"204": {
        "description": "signed out"}}}  # fmt: skip
    page = {"description": "a file of the explorer", "content": html}
    name = [_param("name", "path", {"type": "string"})]
    return {
        "/v1/auth/challenge": _get("A sign-in challenge (anonymous)",
                                   _json("Challenge", "issued")),
        "/v1/auth/session": _get("Who the request's identity is, and what it reads",
                                 _json("Session", "found"), 401) | {"post": sign_in,
                                                                     "delete": sign_out},
        "/explorer/": _get("The audit explorer's page, sign-in included (anonymous)", page),
        "/explorer/{name}": _get("A file of the explorer (anonymous)", page, 404, params=name),
    }  # fmt: skip


def _json(schema: str, description: str) -> dict[str, Any]:
    media = {"schema": _ref(schema)}
    return {
        "description": description,
        "content": {"application/json": media, "application/msgpack": media},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json("Error", "refused: see `error` and `reason`") for s in statuses}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = True) -> Any:
    return {"name": name, "in": where, "required": required, "schema": schema}


def _get(summary: str, ok: dict[str, Any], *errors: int, params: Any = ()) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": list(params),
                    "responses": {"200": ok, **_errors(*errors)}}}  # fmt: skip


def _writes() -> dict[str, Any]:
    submit = {
        "summary": "Submit one tx or a batch; ?wait=true answers once they are committed",
        "parameters": [_param("wait", "query", {"type": "boolean"}, required=False)],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("Submission")},
            "application/msgpack": {"schema": _ref("Submission")},
        }},
        "responses": {
            "200": _json("SubmitResult", "waited: every accepted tx is committed"),
            "202": _json("SubmitResult", "accepted (pending, or the wait timed out)"),
            **_errors(400, 401, 403, 409, 413, 415, 422, 429, 503),
        },
    }  # fmt: skip
    peer_batch = {
        "summary": "Consensus messages from a validator (msgpack array of signed envelopes); "
        "over TLS, only a client certificate issued by a validator gets past 403",
        "requestBody": {"required": True, "content": {"application/msgpack": {"schema": {
            "type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "responses": {"204": {"description": "taken (each message checked on its own)"},
                      **_errors(400, 403, 413, 503)},
    }  # fmt: skip
    return {"/v1/transactions": {"post": submit}, "/peer/v1/messages": {"post": peer_batch}}


def _reads() -> dict[str, Any]:
    tx_id = [_param("tx_id", "path", _HASH)]
    key = _param("key", "path", {"type": "string"})
    limit = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10_000},
                   required=False)  # fmt: skip
    cursor = _param("cursor", "query", {"type": "string"}, required=False)
    height = [
        _param("height", "path", {"type": "string", "pattern": "^([0-9]+|latest|[0-9a-f]{64})$"})
    ]
    heights = [_param("from", "query", _INT), _param("to", "query", _INT, required=False)]
    # path -> (summary, response schema, error statuses, parameters)
    table: dict[str, tuple[str, str, tuple[int, ...], list[Any]]] = {
        "/v1/transactions/{tx_id}": ("A tx's status (and the tx once committed)", "TxLookup",
                                     (400, 401, 403, 404, 503), tx_id),
        "/v1/transactions/{tx_id}/proof": ("Proof bundle of a committed tx (docs/protocol.md)",
                                           "ProofBundle", (400, 401, 403, 404, 503), tx_id),
        "/v1/blocks/{height}": (("A certified block by height, 'latest' or block hash: "
                                 "validators and auditors"),
                                "Block", (400, 401, 403, 404, 503), height),
        "/v1/records/{key}": ("Current value of a record (the key may contain /)", "Record",
                              (400, 401, 403, 404, 503), [key]),
        "/v1/history/{key}": (("A page of a record's versions, oldest first; follow "
                               "next_cursor"), "History", (400, 401, 403, 404, 503),
                              [key, limit, cursor]),
        "/v1/checkpoint": ("Latest certified head", "Checkpoint", (401, 404, 503), []),
        "/v1/checkpoint/stable": (("The signed Checkpoint votes of the last stable checkpoint "
                                   "(docs/protocol.md 19.6)"), "StableCheckpoint",
                                  (401, 404, 503), []),
        "/v1/chain": (("Certified blocks from..to as their exact bytes (at most 64, 4 MiB): "
                       "validators and auditors"), "ChainPage", (400, 401, 403, 503),
                      heights),
        "/v1/consistency": ("Consistency proof between two certified heads", "Consistency",
                            (400, 401, 404, 503), heights),
        "/v1/status": ("Node status", "Status", (401,), []),
        "/v1/votes": (("Each validator's votes (kept by a certificate or not) and view changes, "
                       "as this node saw them"), "Votes", (400, 401, 404, 503), votes.PARAMS),
    }  # fmt: skip
    paths = {
        path: _get(summary, _json(schema, "found"), *errors, params=params)
        for path, (summary, schema, errors, params) in table.items()
    }
    text = {"text/plain": {"schema": {"type": "string"}}}
    blocks = {"application/msgpack": {"schema": {"type": "array"}}}
    document = {"application/json": {"schema": {"type": "object"}}}
    return paths | {
        "/v1/openapi.json": _get("This document", {"description": "OpenAPI 3.1",
                                                   "content": document}),
        "/metrics": _get("Prometheus metrics, on the metrics listener only (404 elsewhere)",
                         {"description": "text format", "content": text}, 404),
        "/peer/v1/blocks": _get(
            "Certified blocks for state transfer (validators only, as /peer/v1/messages)",
            {"description": "msgpack array of [block bytes, certificate bytes]",
             "content": blocks},
            400, 403, params=heights,
        ),
    }  # fmt: skip


def _operations() -> dict[str, Any]:
    """Probes, the event stream and record queries (docs/protocol.md section 18)."""
    text = {"type": "string"}
    ready = {"application/json": {"schema": _obj(["ready", "detail"], ready={"const": True},
                                                 detail=text)}}  # fmt: skip
    not_ready = {"application/json": {"schema": _obj(
        ["error", "reason", "ready"], ready={"const": False}, reason=text,
        error={"enum": ["stopped", "not_started", "following", "no_quorum", "view_change",
                        "catching_up"]},
    )}}  # fmt: skip
    alive = {"application/json": {"schema": _obj(["status"], status={"const": "alive"})}}
    stream = {
        "text/event-stream": {
            "schema": {
                "type": "string",
                "description": (
                    "events `tx` (id H:I, with outcome and reason), `alert` (a risk alert, "
                    "id H:K after the block's txs) and `block` (id H), data JSON; `dropped` "
                    "ends a stream"
                ),
            }
        }
    }
    optional = [
        _param("from", "query", _INT | {"minimum": 1}, required=False),
        _param("prefix", "query", text, required=False),
        _param("Last-Event-ID", "header", text, required=False),
    ]  # fmt: skip
    page = [
        _param("prefix", "query", text, required=False),
        _param("type", "query", text, required=False),
        _param("cursor", "query", text, required=False),
        _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
               required=False),
    ]  # fmt: skip
    return {
        "/healthz": _get("Liveness (anonymous)", {"description": "alive", "content": alive}),
        "/readyz": {"get": {
            "summary": "Readiness (anonymous): in a view, a quorum reachable, caught up",
            "parameters": [],
            "responses": {"200": {"description": "ready", "content": ready},
                          "503": {"description": "not ready: why", "content": not_ready}},
        }},
        "/v1/records": _get(
            "Current records by key prefix and type, a page at a time, in key order; only "
            "namespaces the identity reads are listed", _json("RecordPage", "a page"),
            400, 401, 403, 503, params=page,
        ),
        "/v1/events": _get(
            "Server-Sent Events: committed txs the identity reads, and blocks; resumable",
            {"description": "an event stream", "content": stream}, 400, 401, 503,
            params=optional,
        ),
    }  # fmt: skip


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CityLedger node API",
            "version": VERSION,
            "description": "JSON with hex-encoded bytes; msgpack (bytes as bin) when the "
            "request says application/msgpack. Errors are {error, reason}. A tx whose type "
            "names a record kind has a body that follows that kind's schema "
            "(components body.<type>, and GET /v1/kinds/{type}) and meets its rules.",
        },
        "paths": operation_ids.named(
            _writes()
            | _reads()
            | _auth_paths()
            | _operations()
            | _fiscal_paths()
            | _governance_paths()
        ),
        "components": {"schemas": _schemas(), "securitySchemes": _security()},
        # signed (all four headers), a browser session, or anonymous where the route allows
        "security": [
            {"identity": [], "timestamp": [], "nonce": [], "signature": []},
            {"session": []},
            {},
        ],
    }
