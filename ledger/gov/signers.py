"""Who signed a tx, judged by the configuration in force: at admission, in a block, in execution.

Three moments, three rules (docs/protocol.md sections 5 and 20.6):

- admission (a node, the CLI): the signer must be in force: a revoked client is refused
  (`revoked`) with everything else of `ledger.tx.check_stateless` against the configuration;
- a block: a tx admitted before its client was revoked or its key rotated may still be
  proposed, so a block may hold it: its signer may be retired, and its signature may verify
  under a key rotated out (the last few). Anything else makes the block invalid, as before;
- execution: such a tx is recorded refused, `revoked` or `key_rotated` (ledger/kinds/execute.py).
"""

from ledger import crypto
from ledger import tx as txs
from ledger.errors import InvalidTransaction
from ledger.genesis import Admin, Client
from ledger.gov.codes import KEY_ROTATED, REVOKED
from ledger.gov.config import Config


def admitted_signer(tx: txs.Transaction, config: Config) -> Client | Admin:
    """The signer of a tx offered for admission; `InvalidTransaction` as `check_stateless`
    raises it, or `revoked`."""
    if tx.chain_id == config.members.chain_id and tx.client_id in config.retired:
        why = f"{tx.client_id!r} was revoked by governance (from height {config.since} or before)"
        raise InvalidTransaction(REVOKED, why)
    return txs.check_stateless(tx, config.members)


def block_signer(tx: txs.Transaction, config: Config) -> Client | Admin:
    """The signer of a tx in a block executed under `config`: one in force (with the rules
    of `check_stateless`), or a retired one (its tx is refused in execution)."""
    retired = config.retired.get(tx.client_id)
    if retired is not None and tx.chain_id == config.members.chain_id:
        return retired
    return txs.check_stateless(tx, config.members)


def check_block_signature(tx: txs.Transaction, signer: Client | Admin, config: Config) -> None:
    """The signature verifies under the signer's key, or one it rotated out; else
    `bad_signature`."""
    payload = tx.unsigned_payload()
    if crypto.verify(signer.key, crypto.Domain.TX, payload, tx.signature):
        return
    for old in config.rotated.get(tx.client_id, ()):
        if crypto.verify(crypto.load_public_key(old), crypto.Domain.TX, payload, tx.signature):
            return
    raise InvalidTransaction(txs.BAD_SIGNATURE, "signature does not match the client's key")


def execution_refusal(tx: txs.Transaction, config: Config) -> str | None:
    """`revoked` or `key_rotated` for a client tx that its block may hold but that the
    configuration refuses; None for every other tx. Only the txs of a client that rotated
    a key pay for a second signature check."""
    if tx.client_id in config.retired:
        return REVOKED
    if tx.client_id not in config.rotated:
        return None
    client = config.members.clients[tx.client_id]
    payload = tx.unsigned_payload()
    return (
        None if crypto.verify(client.key, crypto.Domain.TX, payload, tx.signature) else KEY_ROTATED
    )
