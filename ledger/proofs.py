"""The one verifier of proof bundles, checkpoints and consistency proofs (docs/protocol.md, 14).

Each is checked against nothing but the genesis. Inputs are plain maps as they travel: decoded
JSON, whose byte strings are lowercase hex, or decoded MessagePack, whose byte strings are bin
(`parse` turns a file's bytes into such a map). Every hashed or signed part is carried as the
canonical bytes it was computed over, so nothing here needs a canonical form of the map itself;
instead a map must hold exactly its known fields, so that no byte of it goes unchecked.

- A checkpoint is a certified head: a header and a quorum certificate over its hash.
- A bundle proves one tx: its bytes, its block's checkpoint, and the RFC 9162 inclusion of its
  id at `index` in a tree of `header.tx_count` leaves under `header.tx_root`, and of its
  outcome (accepted, or a reason code) at the same index under `header.outcome_root`. The
  header binds the tree size, so the path pins the position; optionally an anchor proves the
  block's hash as leaf `height` of a later checkpoint's history tree.
- A consistency proof shows that the chain at one checkpoint is a prefix of another's.

Every check raises `InvalidProof` with the reason, nothing else (our own bugs are assertions).
Pure: no I/O and no store; node/proofs.py builds these maps from a store.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from ledger import merkle
from ledger import tx as txs
from ledger.block import (
    HEIGHT_MAX,
    Block,
    BlockHeader,
    Certificate,
    decode_certificate,
    decode_header,
    verify_certificate,
)
from ledger.errors import InvalidBlock, InvalidTransaction, LedgerError
from ledger.genesis import Genesis
from ledger.gov import history, machine
from ledger.gov.config import Config
from ledger.gov.signers import block_signer, check_block_signature
from ledger.kinds.base import ACCEPTED, REASONS, Refused
from ledger.kinds.execute import Overlay, outcome_leaf
from ledger.primitives import BLOCK_TXS_MAX, DIGEST_BYTES

BUNDLE_FORMAT: Final = "cityledger-proof-bundle/2"  # 2: the outcome and its proof
# 3: the governance changes the tx's configuration depends on (a node writes 2 when none)
BUNDLE_FORMAT_GOVERNANCE: Final = "cityledger-proof-bundle/3"
# The largest bundle as indented JSON: a 20 KiB tx, two headers and certificates, and two
# proofs, all as hex, stay under 100 KiB; the rest is room for the governance it carries
# (each governance tx with its block: about 3 KiB as JSON).
BUNDLE_BYTES_MAX: Final = 4 * 1024 * 1024
GOVERNANCE_BLOCKS_MAX: Final = 1024  # blocks of governance txs one bundle carries
GOVERNANCE_TXS_MAX: Final = 2048  # governance txs one bundle carries, in all
CHECKPOINT_FIELDS: Final = frozenset(
    {"height", "block_hash", "history_root", "header", "certificate"}
)
ANCHOR_FIELDS: Final = CHECKPOINT_FIELDS | {"history_proof"}
BUNDLE_FIELDS: Final = frozenset(
    {
        "format", "chain_id", "genesis_hash", "tx_id", "tx", "height", "index", "tx_count",
        "header", "block_hash", "tx_proof", "certificate", "anchor", "outcome", "outcome_proof",
    }
)  # fmt: skip
BUNDLE_FIELDS_GOVERNANCE: Final = BUNDLE_FIELDS | {"governance"}
GOVERNANCE_BLOCK_FIELDS: Final = frozenset({"height", "header", "block_hash", "certificate", "txs"})
GOVERNANCE_TX_FIELDS: Final = frozenset({"index", "tx", "tx_proof", "outcome_proof"})
CONFIG_PROOF_FIELDS: Final = frozenset({"chain_id", "genesis_hash", "height", "governance"})
CONSISTENCY_FIELDS: Final = frozenset({"from", "to", "consistency_proof", "inclusion_proof"})
_BLOCK_FIELDS: Final = ("height", "header", "block_hash", "certificate")
_HEX: Final = frozenset("0123456789abcdef")


class InvalidProof(LedgerError):
    """A bundle, checkpoint or consistency proof that does not prove its claim; says why."""


@dataclass(frozen=True)
class Certified:
    """A header whose hash a quorum of the validators in force at its height signed;
    `members` is that configuration (the genesis until governance changed it)."""

    header: BlockHeader
    block_hash: bytes
    certificate: Certificate
    members: Genesis


@dataclass(frozen=True)
class Proven:
    """What a valid bundle proves: `tx` is at `index` of the certified `block`, with `outcome`
    ("" accepted, else the reason code that refused it)."""

    tx: txs.Transaction
    block: Certified
    index: int
    anchor: Certified | None
    outcome: str = ""
    changes: int = 0  # the governance changes the bundle carried and replayed

    @property
    def tx_count(self) -> int:
        return self.block.header.tx_count


# --- Reading ---------------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidProof(f"the field {key!r} appears twice")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise InvalidProof(f"the number {text} is not an integer")


def parse(data: bytes) -> dict[str, Any]:
    """The map of a bundle file's bytes, JSON or MessagePack (docs/protocol.md 14.1)."""
    if len(data) > BUNDLE_BYTES_MAX:
        raise InvalidProof(f"larger than {BUNDLE_BYTES_MAX} bytes: not a proof bundle")
    if data[:1] and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):  # a msgpack map
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise InvalidProof(f"not MessagePack: {type(exc).__name__}") from None
    else:
        try:
            value = json.loads(
                data.decode("utf-8"), object_pairs_hook=_reject_duplicates,
                parse_float=_no_float, parse_constant=_no_float,
            )  # fmt: skip
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidProof(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidProof("not a proof bundle: expected an object")
    return value


def _fields(doc: Any, names: frozenset[str], where: str) -> Mapping[str, Any]:
    """`doc` if it is a map of exactly the fields `names`: an extra field would go unchecked."""
    if not isinstance(doc, Mapping):
        raise InvalidProof(f"{where}: expected an object")
    if not all(isinstance(k, str) for k in doc):
        raise InvalidProof(f"{where} has a field name that is not text")
    unknown, missing = sorted(set(doc) - names), sorted(names - set(doc))
    if unknown:
        raise InvalidProof(f"{where} has an unknown field {unknown[0]!r}")
    if missing:
        raise InvalidProof(f"{where} lacks the field {missing[0]!r}")
    return doc


def _bytes(doc: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    value = doc[name]
    if isinstance(value, bytes):  # from MessagePack
        raw = value
    elif isinstance(value, str) and len(value) % 2 == 0 and set(value) <= _HEX:
        raw = bytes.fromhex(value)
    else:
        raise InvalidProof(f"{name}: expected bytes (lowercase hex in JSON)")
    if length is not None and len(raw) != length:
        raise InvalidProof(f"{name}: expected {length} bytes, found {len(raw)}")
    return raw


def _int(doc: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidProof(f"{name}: expected an integer in [{low}, {high}]")
    return value


def _hashes(doc: Mapping[str, Any], name: str, count_max: int) -> list[bytes]:
    value = doc[name]
    if not isinstance(value, list) or len(value) > count_max:
        raise InvalidProof(f"{name}: expected a list of at most {count_max} hashes")
    return [_bytes({name: v}, name, DIGEST_BYTES) for v in value]


# --- Checkpoints -----------------------------------------------------------------------------


def _certified(doc: Mapping[str, Any], genesis: Genesis, where: str) -> Certified:
    """The header of `doc` and the certificate over its hash, against the validators of
    `genesis` (the configuration in force before the block)."""
    try:
        header = decode_header(_bytes(doc, "header"))
    except InvalidBlock as exc:
        raise InvalidProof(f"{where}header: {exc}") from None
    block_hash = header.hash()
    if _bytes(doc, "block_hash", DIGEST_BYTES) != block_hash:
        raise InvalidProof(f"{where}block_hash is not the hash of the header")
    if _int(doc, "height", 1, HEIGHT_MAX) != header.height:
        raise InvalidProof(f"{where}height is not the header's height {header.height}")
    if header.proposer != header.view % len(genesis.validators):
        raise InvalidProof(f"{where}header's proposer is not the primary of its view")
    try:
        cert = decode_certificate(_bytes(doc, "certificate"))
        # A certificate covers the header's hash; the block's txs play no part in it.
        verify_certificate(cert, Block(header, (), block_hash), genesis)
    except InvalidBlock as exc:
        raise InvalidProof(f"{where}certificate of block {header.height}: {exc}") from None
    return Certified(header, block_hash, cert, genesis)


def _checkpoint(doc: Mapping[str, Any], genesis: Genesis, where: str) -> Certified:
    head = _certified(doc, genesis, where)
    if _bytes(doc, "history_root", DIGEST_BYTES) != head.header.history_root:
        raise InvalidProof(f"{where}history_root is not the header's history root")
    return head


def verify_checkpoint(doc: Any, genesis: Genesis) -> Certified:
    """Check a certified head (14.2) against `genesis`; return it."""
    return _checkpoint(_fields(doc, CHECKPOINT_FIELDS, "the checkpoint"), genesis, "")


# --- Bundles ---------------------------------------------------------------------------------


def _transaction(doc: Mapping[str, Any], config: Config) -> txs.Transaction:
    """The tx of a bundle: canonical, named by its id, signed by a signer that a block under
    `config` (the configuration in force before it) may hold (docs/protocol.md 20.6)."""
    try:
        tx = txs.decode_tx(_bytes(doc, "tx"))
    except InvalidTransaction as exc:
        raise InvalidProof(f"tx: {exc}") from None
    if _bytes(doc, "tx_id", DIGEST_BYTES) != tx.tx_id:
        raise InvalidProof("tx_id is not the hash of the tx")
    try:
        check_block_signature(tx, block_signer(tx, config), config)
    except InvalidTransaction as exc:
        raise InvalidProof(f"tx: {exc}") from None
    return tx


def _position(doc: Mapping[str, Any], tx: txs.Transaction, header: BlockHeader) -> int:
    """The tx's index, proven by its inclusion in the tree of `header.tx_count` leaves: a path
    verifies at one (index, size) of a root at most, and the header fixes the size."""
    count = header.tx_count
    if _int(doc, "tx_count", 1, BLOCK_TXS_MAX) != count:
        raise InvalidProof(f"tx_count is not the header's tx count {count}")
    index = _int(doc, "index", 0, BLOCK_TXS_MAX - 1)
    if index >= count:
        raise InvalidProof(f"index {index} is not below the block's tx count {count}")
    proof = _hashes(doc, "tx_proof", merkle.INCLUSION_PROOF_HASHES_MAX)
    if not merkle.verify_inclusion(tx.tx_id, index, count, proof, header.tx_root):
        raise InvalidProof(f"tx_proof does not include the tx at index {index} of {count}")
    return index


def _anchor(value: Any, block: Certified, replay: "_Governance") -> Certified | None:
    """A later checkpoint whose history tree holds the block's hash as leaf `height`, certified
    by the validators in force before it."""
    if value is None:
        return None
    anchor = _fields(value, ANCHOR_FIELDS, "anchor")
    size = _int(anchor, "height", 1, HEIGHT_MAX)
    top = _checkpoint(anchor, replay.before(size).members, "anchor ")
    height = block.header.height
    if size <= height:
        raise InvalidProof(f"anchor block {size} is not above block {height}")
    proof = _hashes(anchor, "history_proof", merkle.INCLUSION_PROOF_HASHES_MAX)
    if not merkle.verify_inclusion(block.block_hash, height, size, proof, top.header.history_root):
        raise InvalidProof(f"anchor history_proof does not include block {height}")
    return top


class _Governance:
    """The configuration in force at each height, replayed from the genesis and the certified
    governance txs a bundle carries (14.5), with the rules every validator runs (ledger/gov)."""

    def __init__(self, genesis: Genesis, blocks: Any) -> None:
        if not isinstance(blocks, list) or len(blocks) > GOVERNANCE_BLOCKS_MAX:
            raise InvalidProof(f"governance: a list of at most {GOVERNANCE_BLOCKS_MAX} blocks")
        self._blocks = blocks
        self._done = 0  # blocks replayed so far
        self._txs = 0
        self._last = 0  # the height of the last block replayed
        self._state = Overlay(_nothing)
        self._configs = history.Configs(genesis)

    @property
    def configs(self) -> history.Configs:
        return self._configs

    @property
    def state(self) -> Overlay:
        return self._state

    @property
    def changes(self) -> int:
        """The effective changes replayed: the version of the configuration reached."""
        return history.head(self._state.get, self._configs.genesis)[0]

    def before(self, height: int) -> Config:
        """The configuration in force before block `height`: every carried block below it
        replayed. Heights asked for never decrease."""
        while self._done < len(self._blocks):
            where = f"governance[{self._done}] "
            doc = _fields(self._blocks[self._done], GOVERNANCE_BLOCK_FIELDS, where.strip())
            at = _int(doc, "height", 1, HEIGHT_MAX)
            if at >= height:
                break
            if at <= self._last:
                raise InvalidProof(f"{where}height {at} is not above the one before it")
            self._replay(doc, at, where)
            self._done, self._last = self._done + 1, at
        return self._configs.of_state(self._state.get)

    def finish(self, top: int) -> None:
        """Every carried block must lie below `top`, the highest block the bundle proves."""
        self.before(top)
        if self._done < len(self._blocks):
            raise InvalidProof(f"governance[{self._done}] is not below block {top}")

    def _replay(self, doc: Mapping[str, Any], height: int, where: str) -> None:
        before = self._configs.of_state(self._state.get)
        block = _certified(doc, before.members, where)
        items = doc["txs"]
        if not isinstance(items, list) or not items:
            raise InvalidProof(f"{where}txs: a list of at least one governance tx")
        self._txs += len(items)
        if self._txs > GOVERNANCE_TXS_MAX:
            raise InvalidProof(f"governance: more than {GOVERNANCE_TXS_MAX} txs")
        last = -1
        for number, item in enumerate(items):
            at = f"{where}txs[{number}] "
            entry = _fields(item, GOVERNANCE_TX_FIELDS, at.strip())
            tx = _governance_tx(entry, before, at)
            index = _int(entry, "index", 0, BLOCK_TXS_MAX - 1)
            if index <= last:
                raise InvalidProof(f"{at}index {index} is not above the one before it")
            last = index
            _proven_accepted(entry, tx, index, block.header, at)
            change = machine.GovTx(tx.client_id, tx.key, tx.type, tx.body)
            try:
                writes = machine.execute(self._state.get, change, height, before, self._configs)
            except Refused as refused:
                why = str(refused)
                raise InvalidProof(
                    f"{at}the rules refuse what block {height} accepted ({why})"
                ) from None
            self._state.update(writes)


def _governance_tx(entry: Mapping[str, Any], config: Config, where: str) -> txs.Transaction:
    try:
        tx = txs.decode_tx(_bytes(entry, "tx"))
        check_block_signature(tx, block_signer(tx, config), config)
    except InvalidTransaction as exc:
        raise InvalidProof(f"{where}tx: {exc}") from None
    if not machine.is_governance(tx.key):
        raise InvalidProof(f"{where}tx is no governance tx")
    return tx


def _proven_accepted(
    entry: Mapping[str, Any], tx: txs.Transaction, index: int, header: BlockHeader, where: str
) -> None:
    """The tx is at `index` of the block, and accepted there."""
    count = header.tx_count
    if index >= count:
        raise InvalidProof(f"{where}index {index} is not below the block's tx count {count}")
    proof = _hashes(entry, "tx_proof", merkle.INCLUSION_PROOF_HASHES_MAX)
    if not merkle.verify_inclusion(tx.tx_id, index, count, proof, header.tx_root):
        raise InvalidProof(f"{where}tx_proof does not include the tx at index {index}")
    proof = _hashes(entry, "outcome_proof", merkle.INCLUSION_PROOF_HASHES_MAX)
    leaf = outcome_leaf(tx.tx_id, ACCEPTED)
    if not merkle.verify_inclusion(leaf, index, count, proof, header.outcome_root):
        raise InvalidProof(f"{where}outcome_proof does not prove the tx accepted")


def _nothing(_key: bytes) -> None:
    return None


def verify_bundle(doc: Any, genesis: Genesis) -> Proven:
    """Check a proof bundle (14.3) against `genesis` alone; return what it proves."""
    formats = {BUNDLE_FORMAT: BUNDLE_FIELDS, BUNDLE_FORMAT_GOVERNANCE: BUNDLE_FIELDS_GOVERNANCE}
    names = formats.get(str(doc.get("format"))) if isinstance(doc, Mapping) else None
    if names is None:
        wanted = " or ".join(repr(f) for f in formats)
        raise InvalidProof(f"not a proof bundle: format {wanted} expected")
    doc = _fields(doc, names, "the bundle")
    if doc["chain_id"] != genesis.chain_id:
        raise InvalidProof(f"the bundle is for chain {doc['chain_id']!r}, not {genesis.chain_id!r}")
    if _bytes(doc, "genesis_hash", DIGEST_BYTES) != genesis.hash:
        raise InvalidProof("the bundle's genesis_hash is not this genesis's hash")
    height = _int(doc, "height", 1, HEIGHT_MAX)
    replay = _Governance(genesis, doc.get("governance", []))
    config = replay.before(height)
    tx = _transaction(doc, config)
    block = _certified({name: doc[name] for name in _BLOCK_FIELDS}, config.members, "")
    try:
        txs.check_time(tx, config.members, block.header.timestamp_ms)
    except InvalidTransaction as exc:
        raise InvalidProof(f"tx is not valid in its block: {exc}") from None
    index = _position(doc, tx, block.header)
    outcome = _outcome(doc, tx, index, block.header)
    anchor = _anchor(doc["anchor"], block, replay)
    replay.finish(height if anchor is None else anchor.header.height)
    return Proven(tx, block, index, anchor, outcome, replay.changes)


def _outcome(doc: Mapping[str, Any], tx: txs.Transaction, index: int, header: BlockHeader) -> str:
    """The tx's outcome, proven at its index in the header's outcome tree (docs/protocol.md
    7.5): `""` accepted, or one reason code."""
    outcome = doc["outcome"]
    if outcome != ACCEPTED and outcome not in REASONS:
        raise InvalidProof('outcome: expected "" (accepted) or a reason code')
    proof = _hashes(doc, "outcome_proof", merkle.INCLUSION_PROOF_HASHES_MAX)
    leaf = outcome_leaf(tx.tx_id, outcome)
    if not merkle.verify_inclusion(leaf, index, header.tx_count, proof, header.outcome_root):
        raise InvalidProof(f"outcome_proof does not prove outcome {outcome or 'accepted'!r}")
    return str(outcome)


# --- The configuration in force (a client's trust in the validators) --------------------------


@dataclass(frozen=True)
class ProvenConfigs:
    """What a valid configuration proof proves: the configuration in force after every height
    up to `height`, each change certified by the validators in force before it."""

    height: int
    changes: int
    configs: history.Configs
    get: history.Getter  # the replayed governance state

    def after(self, height: int) -> Config:
        """The configuration in force after block `height` (at most `height` of the proof)."""
        assert 0 <= height <= self.height
        return self.configs.at_height(self.get, height)

    @property
    def current(self) -> Config:
        return self.after(self.height)


def verify_configs(doc: Any, genesis: Genesis) -> ProvenConfigs:
    """Check a configuration proof (`GET /v1/config/proof`, docs/protocol.md 14.6) against
    `genesis` alone: its governance blocks replayed as a bundle's are (14.5), every one below
    block `height + 1`."""
    doc = _fields(doc, CONFIG_PROOF_FIELDS, "the configuration proof")
    if doc["chain_id"] != genesis.chain_id:
        raise InvalidProof(f"the proof is for chain {doc['chain_id']!r}, not {genesis.chain_id!r}")
    if _bytes(doc, "genesis_hash", DIGEST_BYTES) != genesis.hash:
        raise InvalidProof("the proof's genesis_hash is not this genesis's hash")
    height = _int(doc, "height", 0, HEIGHT_MAX - 1)
    replay = _Governance(genesis, doc["governance"])
    replay.finish(height + 1)
    return ProvenConfigs(height, replay.changes, replay.configs, replay.state.get)


# --- Consistency -----------------------------------------------------------------------------


def verify_consistency(doc: Any, genesis: Genesis) -> tuple[int, int]:
    """Check a consistency proof (14.4) between two checkpoints; return their heights."""
    doc = _fields(doc, CONSISTENCY_FIELDS, "the consistency proof")
    old = _checkpoint(_fields(doc["from"], CHECKPOINT_FIELDS, "from"), genesis, "from ")
    new = _checkpoint(_fields(doc["to"], CHECKPOINT_FIELDS, "to"), genesis, "to ")
    a, b = old.header.height, new.header.height
    consistency = _hashes(doc, "consistency_proof", merkle.CONSISTENCY_PROOF_HASHES_MAX)
    inclusion = _hashes(doc, "inclusion_proof", merkle.INCLUSION_PROOF_HASHES_MAX)
    if a > b:
        raise InvalidProof(f"from ({a}) is above to ({b})")
    if a == b:
        if old.block_hash != new.block_hash:
            raise InvalidProof(f"two different certified blocks at height {a}")
        if consistency or inclusion:
            raise InvalidProof("a proof between one height and itself holds no hashes")
        return a, b
    if not merkle.verify_consistency(
        a, b, old.header.history_root, new.header.history_root, consistency
    ) or not merkle.verify_inclusion(old.block_hash, a, b, inclusion, new.header.history_root):
        raise InvalidProof(f"the chain at {a} is not a prefix of the chain at {b}")
    return a, b
