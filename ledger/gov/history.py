"""How the configuration in force is derived from the chain: a log of effective changes.

The rule state (ledger/kinds) holds, besides the proposals (ledger/gov/machine.py):

    g "head"                 -> [version, digest]      the latest effective change
    g "change" <version>     -> [height, body, digest before]   one entry per effective change

where `body` is the change's canonical proposal body, `height` the block that made it
effective and `digest` chains the log: digest_0 is the genesis hash, digest_v =
SHA-256("cityledger/gov/v1" || digest_(v-1) || encode([height, body])). The configuration
after version v is the genesis with changes 1..v applied in order (ledger/gov/changes.py), so
it is a function of the chain alone; the digest names it, whatever branch of blocks in flight
a state belongs to. `Configs` caches a few configurations by digest, so deriving the one of a
state costs a point read, and building one not cached replays only the changes after the
nearest cached one. Nothing here reads a disk: the caller hands in `get`.
"""

from collections.abc import Callable
from typing import Any, Final

from ledger import crypto
from ledger.encoding import encode
from ledger.genesis import Genesis
from ledger.gov import changes
from ledger.gov.config import Config
from ledger.kinds.base import Writes, state_key

GOV: Final = b"g"  # the rule-state table of governance
HEAD: Final = state_key(GOV, "head")
DIGEST_DOMAIN: Final = b"cityledger/gov/v1"
CONFIGS_CACHED: Final = 16  # configurations kept: the ones of the blocks in flight, and a few
GENESES_CACHED: Final = 4  # chains whose configurations `configs_for` keeps

Getter = Callable[[bytes], Any]


def change_key(version: int) -> bytes:
    assert version >= 1
    return state_key(GOV, "change", str(version))


def next_digest(previous: bytes, height: int, body: dict[str, Any]) -> bytes:
    return crypto.sha256(DIGEST_DOMAIN + previous + encode([height, body]))


def head(get: Getter, genesis: Genesis) -> tuple[int, bytes]:
    """(version, digest) of the configuration a state holds."""
    value = get(HEAD)
    if value is None:
        return 0, genesis.hash
    version, digest = value
    return int(version), bytes(digest)


def record(get: Getter, genesis: Genesis, change: changes.Change, height: int) -> Writes:
    """The state writes that make `change` effective at `height`, after the state's head."""
    version, digest = head(get, genesis)
    body = change.body()
    new_digest = next_digest(digest, height, body)
    return {
        change_key(version + 1): [height, body, digest],
        HEAD: [version + 1, new_digest],
    }


class Configs:
    """A bounded cache of configurations by digest, and their derivation from a state."""

    def __init__(self, genesis: Genesis) -> None:
        self._genesis = genesis
        self._cache: dict[bytes, Config] = {genesis.hash: Config(genesis)}

    @property
    def genesis(self) -> Genesis:
        return self._genesis

    def of_state(self, get: Getter) -> Config:
        """The configuration in force after the state `get` reads."""
        version, digest = head(get, self._genesis)
        return self._build(get, version, digest)

    def at_height(self, get: Getter, height: int) -> Config:
        """The configuration in force after block `height` (the one block height+1 meets),
        given a state at or above that height: the latest change made at or below it."""
        version, digest = head(get, self._genesis)
        low, high = 0, version  # the answer is the greatest version made at or below height
        while low < high:
            middle = (low + high + 1) // 2
            if int(get(change_key(middle))[0]) <= height:
                low = middle
            else:
                high = middle - 1
        if low < version:
            _, _, before = get(change_key(low + 1))
            digest = bytes(before)
        return self._build(get, low, digest)

    def of_block(self, get: Getter, height: int) -> Config:
        """The configuration block `height` is executed and certified under (the one after
        block height-1): its epoch is the block's, its validators the ones whose Commit votes
        make the block's certificate, with its quorum (docs/protocol.md section 20.8)."""
        assert height >= 1
        return self.at_height(get, height - 1)

    def epoch_ends(self, get: Getter) -> list[int]:
        """The heights of the blocks that ended an epoch, in order, as of a state: entry e-1
        is the last block of epoch e-1, so epoch e starts at the block after it."""
        version, _ = head(get, self._genesis)
        ends = []
        for number in range(1, version + 1):
            height, body, _ = get(change_key(number))
            if changes.parse(dict(body)).ends_epoch:
                ends.append(int(height))
        return ends

    def _build(self, get: Getter, version: int, digest: bytes) -> Config:
        # Store writers may run on other threads than the replica: every step below is one
        # dict operation (atomic in CPython), and a lost cache entry only costs a replay.
        pending: list[tuple[int, dict[str, Any]]] = []
        config = self._cache.get(digest)
        while config is None:
            assert version >= 1, "a state's change log reaches back to the genesis"
            height, body, before = get(change_key(version))
            pending.append((int(height), dict(body)))
            version, digest = version - 1, bytes(before)
            config = self._cache.get(digest)
        for height, body in reversed(pending):
            config = changes.apply(config, changes.parse(body), height)
            digest = next_digest(digest, height, body)
            self._remember(digest, config)
        return config

    def _remember(self, digest: bytes, config: Config) -> None:
        self._cache[digest] = config
        for oldest in list(self._cache)[1 : max(1, len(self._cache) - CONFIGS_CACHED + 1)]:
            self._cache.pop(oldest, None)  # the first entry, the genesis's, stays


_SHARED: dict[bytes, Configs] = {}


def configs_for(genesis: Genesis) -> Configs:
    """The shared cache of the configurations of `genesis`'s chain. It memoises pure
    functions of (genesis, state), so sharing it changes no result, only saves replays: the
    replica, the store and a verifier of one chain in one process reuse each other's work
    without each taking a cache as an argument through every layer. Bounded in chains."""
    configs = _SHARED.get(genesis.hash)
    # The hash names the content of a loaded genesis; one built in memory (tests) may share
    # the hash of another's content: then the latest one asked about takes the entry.
    if configs is None or (configs.genesis is not genesis and configs.genesis != genesis):
        _SHARED.pop(genesis.hash, None)
        for other in list(_SHARED)[: max(0, len(_SHARED) - GENESES_CACHED + 1)]:
            _SHARED.pop(other, None)
        configs = _SHARED.setdefault(genesis.hash, Configs(genesis))
    return configs


def config_of(get: Getter, genesis: Genesis) -> Config:
    """The configuration in force after the state `get` reads (of `genesis`'s chain)."""
    return configs_for(genesis).of_state(get)
