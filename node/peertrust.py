"""Which TLS client certificates the peer endpoints accept: those of the epoch in force.

The listeners' handshake (node/tls_sites.py) lets in a certificate that chains to the anchor of
a validator key the node has known: the genesis's, then every key governance added (the
anchors are added to the listeners' contexts when the node enters an epoch; OpenSSL cannot
take one out). `PeerTrust.admits` then decides per request: the certificate must be issued by
the key that a validator of the set in force holds now, so a removed validator's connection,
or one bound to a rotated-out key, is refused from the epoch boundary on, kept-alive
connections included. Each certificate is checked once per epoch (a bounded cache).
"""

import ssl
from collections import OrderedDict
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import crypto
from ledger.genesis import Genesis
from node import tls

CHECKED_KEPT: Final = 256  # certificates whose verdict is remembered within one epoch


class PeerTrust:
    def __init__(self, members: Genesis, contexts: tuple[ssl.SSLContext, ...] = ()) -> None:
        """`contexts`: the listener contexts that ask validators for a client certificate."""
        self._contexts = contexts
        self._members = members
        self._anchored: set[tuple[str, bytes]] = {
            (v.id, v.public_key) for v in members.validators
        }  # the anchors the contexts hold (they start with the genesis's)
        self._checked: OrderedDict[bytes, bool] = OrderedDict()

    def enter(self, members: Genesis) -> None:
        """The set in force changed: trust its validators' keys, and only theirs."""
        self._members = members
        self._checked.clear()
        new = [v for v in members.validators if (v.id, v.public_key) not in self._anchored]
        for v in new:
            anchor = tls.anchors_pem(members, [v.id])
            for context in self._contexts:
                context.load_verify_locations(cadata=anchor)
            self._anchored.add((v.id, v.public_key))

    def admits(self, der: bytes) -> bool:
        """Whether the client certificate `der` (which chained to a known anchor in the
        handshake) is issued by a validator of the set in force, with its current key."""
        digest = crypto.sha256(der)
        verdict = self._checked.get(digest)
        if verdict is None:
            verdict = self._issued_by_member(der)
            self._checked[digest] = verdict
            while len(self._checked) > CHECKED_KEPT:
                self._checked.popitem(last=False)
        return verdict

    def _issued_by_member(self, der: bytes) -> bool:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return False
        for v in self._members.validators:
            if cert.issuer != tls.anchor_name(self._members.chain_id, v.id):
                continue
            try:
                Ed25519PublicKey.from_public_bytes(v.public_key).verify(
                    cert.signature, cert.tbs_certificate_bytes
                )
            except InvalidSignature:
                return False
            return True
        return False
