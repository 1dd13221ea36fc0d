"""TLS identities bound to the validators' Ed25519 keys, and the TLS contexts built on them.

A node's TLS key is ECDSA P-256 (browsers refuse Ed25519 keys in TLS). Its certificate is
issued by the validator's own Ed25519 key: its issuer is the validator's *anchor name* and
its signature is an Ed25519 signature over its to-be-signed bytes. Whoever holds the genesis
can therefore build, for every validator, an *anchor certificate* (a self-issued CA certificate
of that name and that validator's Ed25519 public key) and let the TLS library check the chain
`node certificate -> anchor` with its ordinary verifier, the anchors being the only trust
anchors (a trust anchor's own signature is never checked). No callback, no system store, no
outside CA (docs/protocol.md, "Transport").

It reads and writes the TLS key file only; no sockets.
"""

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ledger.crypto import write_private_key
from ledger.genesis import Genesis
from node.config import DATA_DIR_MODE

ANCHOR_ORGANISATION: Final = "CityLedger validator"
CERT_DAYS: Final = 397  # validity of a node certificate: the longest browsers accept
CLOCK_SKEW: Final = datetime.timedelta(hours=1)  # notBefore lies this far in the past
TLS_KEY_FILE: Final = "tls-key.pem"  # in the data directory: the node's ECDSA P-256 key
TLS_CERT_FILE: Final = "tls-cert.pem"  # beside it: the certificate issued at the last start
TLS_KEY_BYTES_MAX: Final = 8192
# The TLS server name CityLedger's own clients send: a listener with a CA-issued certificate
# presents the bound one to them (`with_bound_name`). A reserved name: it never resolves.
BOUND_SERVER_NAME: Final = "bound.cityledger.invalid"
_BOTH_ENDS: Final = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_FOREVER: Final = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


class TlsError(Exception):
    """A TLS key or certificate file that cannot be used."""


@dataclass(frozen=True)
class ServerIdentity:
    """What a listener presents: a PEM certificate (chain) file and its key file."""

    cert_file: Path
    key_file: Path


def anchor_name(chain_id: str, validator_id: str) -> x509.Name:
    """The issuer name of validator `validator_id`'s node certificates (and its anchor's
    subject)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ANCHOR_ORGANISATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, chain_id),
            x509.NameAttribute(NameOID.COMMON_NAME, validator_id),
        ]
    )


def key_id(public_key: bytes) -> bytes:
    """The key identifier of a validator's Ed25519 key: the first 20 bytes of its SHA-256."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public_key)
    return digest.finalize()[:20]


def anchor_certificate(chain_id: str, validator_id: str, public_key: bytes) -> x509.Certificate:
    """The trust anchor of one validator, built from the genesis alone: a self-issued CA
    certificate of the validator's Ed25519 key. Nobody but the validator can sign with that
    key, so the anchor carries the signature of a throwaway key instead; TLS libraries never
    check the signature of a trust anchor (OpenSSL does only when told to, with
    X509_V_FLAG_CHECK_SS_SIGNATURE), which is what lets any holder of the genesis build it."""
    throwaway = Ed25519PrivateKey.generate()
    return (
        x509.CertificateBuilder()
        .subject_name(anchor_name(chain_id, validator_id))
        .issuer_name(anchor_name(chain_id, validator_id))
        .public_key(Ed25519PublicKey.from_public_bytes(public_key))
        .serial_number(int.from_bytes(key_id(public_key)[:16], "big") | 1)
        .not_valid_before(_EPOCH)
        .not_valid_after(_FOREVER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(key_id(public_key)), critical=False)
        .sign(throwaway, None)
    )


def anchors_pem(genesis: Genesis, validator_ids: Iterable[str] | None = None) -> str:
    """The anchors of the genesis' validators (or of those named), as one PEM string."""
    wanted = None if validator_ids is None else set(validator_ids)
    return "".join(
        anchor_certificate(genesis.chain_id, v.id, v.public_key)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
        for v in genesis.validators
        if wanted is None or v.id in wanted
    )


def node_certificate(
    validator_key: Ed25519PrivateKey, chain_id: str, validator_id: str,
    tls_key: ec.EllipticCurvePrivateKey, hosts: Iterable[str],
    now: datetime.datetime | None = None,
) -> x509.Certificate:  # fmt: skip
    """A certificate for `tls_key` issued by the validator's Ed25519 key, valid for `hosts`
    (IP addresses or DNS names), usable by a server and by a client (mutual TLS)."""
    start = (now or datetime.datetime.now(datetime.UTC)) - CLOCK_SKEW
    public = validator_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, validator_id)]))
        .issuer_name(anchor_name(chain_id, validator_id))
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_BOTH_ENDS), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(key_id(public), None, None), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(validator_key, None)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def load_or_create_tls_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The node's ECDSA P-256 TLS key from `path`, created (mode 0600) if it does not exist."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        write_private_key(path, key)
        return key
    try:
        with path.open("rb") as file:
            data = file.read(TLS_KEY_BYTES_MAX + 1)
        loaded = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        why = type(exc).__name__
        raise TlsError(f"{path}: not a readable unencrypted PEM key ({why})") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise TlsError(f"{path}: not an ECDSA P-256 key")
    return loaded


def node_identity(
    validator_key: Ed25519PrivateKey, genesis: Genesis, validator_id: str, data_dir: Path,
    hosts: Iterable[str],
) -> ServerIdentity:  # fmt: skip
    """The bound identity a node presents: its TLS key (`TLS_KEY_FILE`, created if missing) and
    a certificate for it issued now by the validator's key, written to `TLS_CERT_FILE` (both
    in the data directory; the certificate is public: browsers pin its key)."""
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)  # owner only
    key_path = data_dir / TLS_KEY_FILE
    tls_key = load_or_create_tls_key(key_path)
    cert = node_certificate(validator_key, genesis.chain_id, validator_id, tls_key, hosts)
    cert_path = data_dir / TLS_CERT_FILE
    scratch = cert_path.with_suffix(".tmp")
    scratch.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    scratch.replace(cert_path)
    return ServerIdentity(cert_path, key_path)


def identity_files(data_dir: Path) -> ServerIdentity:
    """The node certificate and TLS key files `node_identity` wrote in `data_dir`."""
    return ServerIdentity(data_dir / TLS_CERT_FILE, data_dir / TLS_KEY_FILE)


def peer_client_context(genesis: Genesis, peer_id: str, own: ServerIdentity) -> ssl.SSLContext:
    """What a node connects to validator `peer_id` with: only that validator's certificate
    is accepted, and the node presents its own (mutual TLS)."""
    return client_context(anchors_pem(genesis, [peer_id]), own)


def _tls13(purpose: ssl._SSLMethod) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def server_context(
    identity: ServerIdentity, peers_pem: str | None, *, require_peer: bool
) -> ssl.SSLContext:
    """A listener's context. `peers_pem`: the validators' anchors; then a client certificate
    is asked for and must chain to one of them (`require_peer`: and must be presented)."""
    context = _tls13(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(identity.cert_file, identity.key_file)
    if peers_pem is not None:
        context.load_verify_locations(cadata=peers_pem)
        context.verify_mode = ssl.CERT_REQUIRED if require_peer else ssl.CERT_OPTIONAL
    return context


def with_bound_name(default: ssl.SSLContext, bound: ssl.SSLContext) -> ssl.SSLContext:
    """`default` (a CA-issued certificate), switching to `bound` (the node certificate) for a
    client that sends `BOUND_SERVER_NAME` as its server name."""

    def pick(conn: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if server_name == BOUND_SERVER_NAME:
            conn.context = bound

    default.sni_callback = pick
    return default


class _BoundNameContext(ssl.SSLContext):
    """A client context that always sends `BOUND_SERVER_NAME` (whatever host it connects to),
    so that a node with a CA-issued certificate presents its bound one."""

    def wrap_socket(
        self, sock: socket.socket, server_side: bool = False,
        do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,  # noqa: ARG002 (always BOUND_SERVER_NAME)
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:  # fmt: skip
        return super().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
            BOUND_SERVER_NAME, session,
        )  # fmt: skip

    def wrap_bio(
        self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
        server_hostname: str | bytes | None = None,  # noqa: ARG002 (always BOUND_SERVER_NAME)
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:  # fmt: skip
        return super().wrap_bio(incoming, outgoing, server_side, BOUND_SERVER_NAME, session)


def client_context(anchors_pem_text: str, identity: ServerIdentity | None = None) -> ssl.SSLContext:
    """A context that accepts exactly the servers whose certificate chains to one of the
    anchors (no system store, no host name check: the anchor is the identity), presenting
    `identity` as client certificate if given."""
    context = _BoundNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if anchors_pem_text:
        context.load_verify_locations(cadata=anchors_pem_text)
    if identity is not None:
        context.load_cert_chain(identity.cert_file, identity.key_file)
    return context


def genesis_client_context(genesis: Genesis) -> ssl.SSLContext:
    """What the CLI, the client library and the bench use: trust exactly the genesis'
    validators."""
    return client_context(anchors_pem(genesis))


def spki_sha256(cert_pem: bytes) -> bytes:
    """SHA-256 of a certificate's SubjectPublicKeyInfo (what browsers pin)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize()
