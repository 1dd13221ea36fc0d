"""The operationId of each route of the node's OpenAPI document (node/openapi.py): the name a
generated client gives the function that calls it. Listed where a plain rule would read badly;
every other id is made of the method and the path's words, so none is ever missing.
"""

from typing import Any, Final

# Each operation's operationId: the name a generated client gives its function.
OPERATION_IDS: Final = {
    ("post", "/v1/transactions"): "submit_transactions",
    ("get", "/v1/transactions/{tx_id}"): "get_transaction",
    ("get", "/v1/transactions/{tx_id}/proof"): "get_proof",
    ("get", "/v1/blocks/{height}"): "get_block",
    ("get", "/v1/chain"): "get_chain",
    ("get", "/v1/records/{key}"): "get_record",
    ("get", "/v1/history/{key}"): "get_history",
    ("get", "/v1/checkpoint"): "get_checkpoint",
    ("get", "/v1/checkpoint/stable"): "get_stable_checkpoint",
    ("get", "/v1/consistency"): "get_consistency",
    ("get", "/v1/status"): "get_status",
    ("get", "/v1/votes"): "get_votes",
    ("get", "/v1/openapi.json"): "get_openapi",
    ("get", "/metrics"): "get_metrics",
    ("get", "/v1/auth/challenge"): "get_challenge",
    ("get", "/v1/auth/session"): "get_session",
    ("post", "/v1/auth/session"): "sign_in",
    ("delete", "/v1/auth/session"): "sign_out",
    ("get", "/explorer/"): "get_explorer",
    ("get", "/explorer/{name}"): "get_explorer_file",
    ("post", "/peer/v1/messages"): "post_peer_messages",
    ("get", "/peer/v1/blocks"): "get_peer_blocks",
    ("get", "/healthz"): "get_healthz",
    ("get", "/readyz"): "get_readyz",
    ("get", "/v1/records"): "query_records",
    ("get", "/v1/events"): "get_events",
    ("get", "/v1/kinds"): "list_kinds",
    ("get", "/v1/kinds/{type}"): "get_kind",
    ("get", "/v1/budget"): "list_budget_lines",
    ("get", "/v1/budget/{key}"): "get_budget_line",
    ("get", "/v1/risks"): "list_risks",
    ("get", "/v1/config"): "get_config",
    ("get", "/v1/config/proof"): "get_config_proof",
    ("get", "/v1/governance/proposals"): "list_proposals",
    ("get", "/v1/governance/proposals/{id}"): "get_proposal",
}


def operation_id(method: str, path: str) -> str:
    """The listed id, else one made of the method and the path's words (never missing)."""
    words = [w.strip("{}").replace(".", "_").replace("-", "_") for w in path.split("/") if w]
    return OPERATION_IDS.get((method, path)) or "_".join([method, *words])


def named(paths: dict[str, Any]) -> dict[str, Any]:
    """`paths` with every operation given its operationId (one it states is kept)."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            operation.setdefault("operationId", operation_id(method, path))
    return paths
