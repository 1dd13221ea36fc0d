"""The replica's cache of peer signatures already checked.

Retransmissions are common (votes are re-sent while a height stalls, a NewView nests
ViewChanges seen before): a signature checked once is not checked again. The cache is keyed by
the digest of everything the signature covers plus the signer, so a hit proves exactly what a
check would. It never decides whether a message is wanted; that is the replica's business.
"""

from collections import OrderedDict
from typing import Final

from ledger import crypto
from ledger.genesis import Genesis

from consensus import messages as m

VERIFIED_CACHE_MAX: Final = 8192


class SignatureCache:
    def __init__(self, genesis: Genesis) -> None:
        self._genesis = genesis
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    def verify(self, msg: m.Message) -> bool:
        """True if `msg`'s signature is its sender's (a known validator) over its content."""
        if not 0 <= msg.sender < len(self._genesis.validators):
            return False
        domain, payload = m.signed_payload(msg, self._genesis.chain_id)
        cache_key = crypto.sha256(domain.value + payload + msg.signature) + bytes([msg.sender])
        if cache_key in self._verified:
            self._verified.move_to_end(cache_key)
            return True
        key = self._genesis.validators[msg.sender].key
        if not crypto.verify(key, domain, payload, msg.signature):
            return False
        self._verified[cache_key] = None
        if len(self._verified) > VERIFIED_CACHE_MAX:
            self._verified.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._verified)
