"""The node's configuration: one TOML file per node, loaded into one frozen `Config`.

This module owns every name and bound of `node.toml`. Loading checks everything and names the
field of every mistake (`ConfigError.problems`), so a node with a bad config never starts.
Relative paths are resolved against the directory of the config file. It reads files only: no
sockets, no store.

```toml
node_id = "node0"              # this validator's id in the genesis
key_file = "key.pem"           # its Ed25519 private key (PKCS#8 PEM, mode 0600)
# key_passphrase_file = "pass"  # if key_file is encrypted: a file (mode 0600) with the passphrase,
# key_passphrase_env = "NODE0_KEY_PASSPHRASE"  # or the environment variable that holds it
data_dir = "data"              # the LevelDB block store
listen = "127.0.0.1:7001"      # host:port of the client API (and of the peer endpoints, unless
                               # peer_listen is set)
genesis = "../../genesis.toml"
log_level = "info"             # debug | info | warning | error
access_log = false             # true: one INFO line per HTTP request (logger cityledger.access)
# optional transport settings, with their defaults (docs/protocol.md, "Transport"):
peer_listen = ""               # host:port of a separate peer listener ("": the listen one)
metrics_listen = "127.0.0.1:0" # host:port of the /metrics listener (port 0: any free port)
insecure = false               # true: plain HTTP everywhere, no TLS (warned at every start)
tls_cert_file = ""             # a CA-issued certificate (chain) for the client listener, and
tls_key_file = ""              # its key; both or neither ("": the bound certificate only)
# optional limits, with their defaults:
body_bytes_max = 4194304       # largest client request body
peer_body_bytes_max = 67108864 # largest peer request body
wait_timeout_ms = 10000        # how long `?wait=true` waits for a commit
peer_queue_max = 1024          # messages queued per peer before new ones are dropped
peer_timeout_ms = 5000         # one peer request (send or block fetch)
pool_capacity = 20000          # pending client txs the replica holds
cores = 0                      # cores this node may use (0: all of the machine's). With 2 or
                               # more, signatures are checked on a pool of threads and writes
                               # synced on a thread of their own; with 1, the event loop does all
reads_queue_max = 64           # store reads (history, lookups, blocks, proofs) queued or running
                               # on the read thread; one more is answered 503 `busy`
read_share_pct = 25            # the read thread's largest share of one core, in percent
answer_bytes_max = 8388608     # about the largest history page (fewer versions, next_cursor)
# What a connection may cost before anyone knows who it is (node/limits.py):
connections_max = 1024         # open connections in all (lowered to fit RLIMIT_NOFILE less
                               # fd_reserve); at the cap a new one replaces the longest-stalled
connections_per_source_max = 256  # open connections from one address; more are refused (503)
header_timeout_ms = 10000      # a request's headers complete within this of their first byte
idle_timeout_ms = 60000        # a keep-alive connection idle this long after an answer closes
body_timeout_ms = 10000        # a body arrives within this, plus its length at body_rate_min
body_rate_min = 4194304        # bytes/s
bodies_bytes_max = 134217728   # request bodies being read at once, in all (503 beyond)
handshake_timeout_ms = 10000   # the TLS handshake (TLS listeners)
header_bytes_max = 32768       # a request's whole header block (431 beyond)
header_line_bytes_max = 8190   # the request line and each header field
headers_max = 64               # header fields in one request
wait_requests_max = 256        # `?wait=true` requests waiting at once (503 beyond)
fd_reserve = 256               # descriptors kept for the store, the peers and the logs
```
"""

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import crypto
from ledger import genesis as genesis_mod
from ledger.errors import LedgerError
from node.limits import Limits

CONFIG_BYTES_MAX: Final = 64 * 1024
DATA_DIR_MODE: Final = 0o700  # a data directory the node creates is its owner's only
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
PORT_MAX: Final = 65535

# name -> (default, low, high) of the optional integer limits
_LIMITS: Final = {
    "body_bytes_max": (4 * 1024 * 1024, 1024, 256 * 1024 * 1024),
    "peer_body_bytes_max": (64 * 1024 * 1024, 64 * 1024, 512 * 1024 * 1024),
    "wait_timeout_ms": (10_000, 0, 600_000),
    "peer_queue_max": (1024, 1, 1_000_000),
    "peer_timeout_ms": (5000, 100, 600_000),
    "pool_capacity": (20_000, 1, 1_000_000),
    "cores": (0, 0, 1024),
    "reads_queue_max": (64, 1, 100_000),
    "read_share_pct": (25, 1, 100),
    "answer_bytes_max": (8 * 1024 * 1024, 64 * 1024, 256 * 1024 * 1024),
    # What a connection may cost before anyone knows who it is (node.limits):
    "connections_max": (1024, 16, 1_000_000),
    "connections_per_source_max": (256, 1, 1_000_000),
    "header_timeout_ms": (10_000, 100, 600_000),
    "idle_timeout_ms": (60_000, 100, 3_600_000),
    "body_timeout_ms": (10_000, 100, 600_000),
    "body_rate_min": (4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    "bodies_bytes_max": (128 * 1024 * 1024, 1024 * 1024, 4 * 1024 * 1024 * 1024),
    "handshake_timeout_ms": (10_000, 100, 600_000),
    "header_bytes_max": (32 * 1024, 1024, 1024 * 1024),
    "header_line_bytes_max": (8190, 256, 65_536),
    "headers_max": (64, 8, 1024),
    "wait_requests_max": (256, 1, 100_000),
    "fd_reserve": (256, 16, 65_536),
}
_REQUIRED: Final = ("node_id", "key_file", "data_dir", "listen", "genesis")
_OPTIONAL_STRINGS: Final = ("peer_listen", "metrics_listen", "tls_cert_file", "tls_key_file")
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:0"
_PASSPHRASE: Final = ("key_passphrase_file", "key_passphrase_env")
_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ConfigError(Exception):
    """A config file that must not start a node; every problem names its field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"invalid node config {path}: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    node_id: str
    key_file: Path
    data_dir: Path
    host: str
    port: int
    genesis: Path
    log_level: str = "info"
    body_bytes_max: int = _LIMITS["body_bytes_max"][0]
    peer_body_bytes_max: int = _LIMITS["peer_body_bytes_max"][0]
    wait_timeout_ms: int = _LIMITS["wait_timeout_ms"][0]
    peer_queue_max: int = _LIMITS["peer_queue_max"][0]
    peer_timeout_ms: int = _LIMITS["peer_timeout_ms"][0]
    pool_capacity: int = _LIMITS["pool_capacity"][0]
    cores: int = _LIMITS["cores"][0]
    reads_queue_max: int = _LIMITS["reads_queue_max"][0]
    read_share_pct: int = _LIMITS["read_share_pct"][0]
    answer_bytes_max: int = _LIMITS["answer_bytes_max"][0]
    connections_max: int = _LIMITS["connections_max"][0]
    connections_per_source_max: int = _LIMITS["connections_per_source_max"][0]
    header_timeout_ms: int = _LIMITS["header_timeout_ms"][0]
    idle_timeout_ms: int = _LIMITS["idle_timeout_ms"][0]
    body_timeout_ms: int = _LIMITS["body_timeout_ms"][0]
    body_rate_min: int = _LIMITS["body_rate_min"][0]
    bodies_bytes_max: int = _LIMITS["bodies_bytes_max"][0]
    handshake_timeout_ms: int = _LIMITS["handshake_timeout_ms"][0]
    header_bytes_max: int = _LIMITS["header_bytes_max"][0]
    header_line_bytes_max: int = _LIMITS["header_line_bytes_max"][0]
    headers_max: int = _LIMITS["headers_max"][0]
    wait_requests_max: int = _LIMITS["wait_requests_max"][0]
    fd_reserve: int = _LIMITS["fd_reserve"][0]
    insecure: bool = False
    access_log: bool = False
    peer_listen: tuple[str, int] | None = None  # (host, port) of a separate peer listener
    metrics_listen: tuple[str, int] = ("127.0.0.1", 0)
    tls_cert_file: Path | None = None  # a CA-issued certificate for the client listener
    tls_key_file: Path | None = None
    key_passphrase_file: Path | None = None
    key_passphrase_env: str | None = None
    path: Path = Path("node.toml")  # the file this config came from, for messages

    def limits(self) -> Limits:
        """The listener's limits (`node.limits`) as this config sets them."""
        return Limits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Limits)})


@dataclass(frozen=True)
class Identity:
    """What the config's files say about this node: its chain, its place in the genesis's set
    (`NOT_IN_GENESIS` for a validator that governance adds later) and its key. Its place in
    the set in force is the store's to say (node/epochs.py): removals and additions move it."""

    genesis: genesis_mod.Genesis
    index: int
    key: Ed25519PrivateKey
    node_id: str = ""  # empty: the id of the genesis's validator at `index`

    @property
    def validator_id(self) -> str:
        return self.node_id or self.genesis.validators[self.index].id

    @property
    def public_key(self) -> bytes:
        return crypto.public_key_bytes(self.key)


NOT_IN_GENESIS: Final = -1


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count): what
    `cores = 0` stands for."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load(path: Path) -> Config:
    """Read and check a node config file; raise `ConfigError` naming every bad field."""
    try:
        with path.open("rb") as file:  # one byte past the limit: never all of a huge file
            data = file.read(CONFIG_BYTES_MAX + 1)
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror}"]) from None
    if len(data) > CONFIG_BYTES_MAX:
        raise ConfigError(path, [f"larger than {CONFIG_BYTES_MAX} bytes"])
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(path, ["not valid TOML: nested too deeply"]) from None
    return from_dict(doc, path)


def from_dict(doc: dict[str, Any], path: Path) -> Config:
    """Check a parsed config document (paths relative to `path`'s directory)."""
    problems: list[str] = []
    base = path.parent
    strings: dict[str, str] = {}
    for name in (*_REQUIRED, "log_level"):
        value = doc.get(name, "info" if name == "log_level" else None)
        if not isinstance(value, str) or not value:
            problems.append(f"{name}: expected a non-empty string")
        else:
            strings[name] = value
    if strings.get("log_level", "info").lower() not in LOG_LEVELS:
        problems.append(f"log_level: expected one of {', '.join(LOG_LEVELS)}")
    host, port = _listen(strings.get("listen"), problems)
    limits = _limits(doc, problems)
    transport = _transport(doc, base, problems)
    passphrase = _passphrase(doc, problems)
    extra = set(doc) - {
        *_REQUIRED,
        "log_level",
        *_LIMITS,
        *_OPTIONAL_STRINGS,
        "insecure",
        "access_log",
        *_PASSPHRASE,
    }
    problems.extend(f"{name}: unknown field" for name in sorted(extra))
    if problems:
        raise ConfigError(path, problems)
    passphrase_file = passphrase.get("key_passphrase_file")
    return Config(
        node_id=strings["node_id"],
        key_file=base / strings["key_file"],
        data_dir=base / strings["data_dir"],
        host=host,
        port=port,
        genesis=base / strings["genesis"],
        log_level=strings["log_level"].lower(),
        key_passphrase_file=None if passphrase_file is None else base / passphrase_file,
        key_passphrase_env=passphrase.get("key_passphrase_env"),
        path=path,
        **limits,
        **transport,
    )


def _listen(value: str | None, problems: list[str], name: str = "listen") -> tuple[str, int]:
    if value is None:
        return "", 0
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")  # an IPv6 address is written [::1]:7001
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= PORT_MAX:
        problems.append(f"{name}: expected HOST:PORT with a port in [0, {PORT_MAX}], got {value!r}")
        return "", 0
    return host, int(port)


def _transport(doc: dict[str, Any], base: Path, problems: list[str]) -> dict[str, Any]:
    """The optional transport fields: listeners, `insecure`, a CA-issued certificate."""
    values: dict[str, str] = {}
    for name in _OPTIONAL_STRINGS:
        value = doc.get(name, "")
        if not isinstance(value, str):
            problems.append(f"{name}: expected a string")
        else:
            values[name] = value
    insecure = doc.get("insecure", False)
    if not isinstance(insecure, bool):
        problems.append("insecure: expected true or false")
        insecure = False
    access_log = doc.get("access_log", False)
    if not isinstance(access_log, bool):
        problems.append("access_log: expected true or false")
        access_log = False
    out: dict[str, Any] = {"insecure": insecure, "access_log": access_log}
    if values.get("peer_listen"):
        out["peer_listen"] = _listen(values["peer_listen"], problems, "peer_listen")
    out["metrics_listen"] = _listen(
        values.get("metrics_listen") or DEFAULT_METRICS_LISTEN, problems, "metrics_listen"
    )
    cert, key = values.get("tls_cert_file", ""), values.get("tls_key_file", "")
    if bool(cert) != bool(key):
        problems.append("tls_cert_file, tls_key_file: set both or neither")
    elif cert and insecure:
        problems.append("tls_cert_file: a certificate needs TLS, but insecure = true")
    elif cert:
        out["tls_cert_file"], out["tls_key_file"] = base / cert, base / key
    return out


def _passphrase(doc: dict[str, Any], problems: list[str]) -> dict[str, str]:
    """Where an encrypted key's passphrase is: a file, or an environment variable (not both)."""
    out: dict[str, str] = {}
    for name in _PASSPHRASE:
        value = doc.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            problems.append(f"{name}: expected a non-empty string")
        elif name == "key_passphrase_env" and not _ENV_NAME_RE.fullmatch(value):
            problems.append(f"{name}: expected an environment variable name such as KEY_PASS")
        else:
            out[name] = value
    if len(out) == len(_PASSPHRASE):
        problems.append("key_passphrase_file, key_passphrase_env: give one of them, not both")
    return out


def _limits(doc: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    out: dict[str, int] = {}
    for name, (default, low, high) in _LIMITS.items():
        value = doc.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"{name}: expected an integer in [{low}, {high}]")
        else:
            out[name] = value
    return out


def load_identity(config: Config) -> Identity:
    """Load the genesis and the key the config names; raise `ConfigError` if they do not fit."""
    origin = config.path
    try:
        genesis = genesis_mod.load(config.genesis)
    except LedgerError as exc:
        raise ConfigError(origin, [f"genesis: {exc}"]) from None
    validator = genesis.validator(config.node_id)
    key = load_key(config)
    if validator is None:  # a validator added by governance: it syncs until it is one
        return Identity(genesis, NOT_IN_GENESIS, key, config.node_id)
    # Another key than its genesis key may be one governance rotated to (the node follows the
    # chain until the set in force names it); another validator's genesis key never is.
    public_key = crypto.public_key_bytes(key)
    other = next((v for v in genesis.validators if v.public_key == public_key), validator)
    if other.id != validator.id:
        problem = f"{config.key_file} is the key of validator {other.id!r}"
        raise ConfigError(origin, [f"key_file: {problem}, not of {validator.id!r}"])
    scheme = "http" if config.insecure else "https"
    if not validator.url.startswith(f"{scheme}://"):
        why = "insecure = true serves plain HTTP" if config.insecure else "TLS is on"
        problem = f"genesis: validator {validator.id!r} has url {validator.url}, but {why}"
        raise ConfigError(origin, [f"{problem}: its url must start with {scheme}://"])
    return Identity(genesis, int(validator.index), key, validator.id)


def load_key(config: Config) -> Ed25519PrivateKey:
    """The node's private key, decrypted with the passphrase its config points to (read even
    when the key turns out not to be encrypted, so a wrong setting is found at once)."""
    origin = config.path
    passphrase: bytes | None = None
    if config.key_passphrase_file is not None:
        try:
            passphrase = crypto.read_passphrase_file(config.key_passphrase_file)
        except LedgerError as exc:
            raise ConfigError(origin, [f"key_passphrase_file: {exc}"]) from None
    if config.key_passphrase_env is not None:
        value = os.environ.get(config.key_passphrase_env, "")
        if not value:
            name = config.key_passphrase_env
            problem = f"the environment variable {name} is not set or empty"
            raise ConfigError(origin, [f"key_passphrase_env: {problem}"])
        passphrase = value.encode()
    try:
        return crypto.load_private_key(config.key_file, passphrase)
    except crypto.PassphraseNeeded as exc:
        raise ConfigError(origin, [
            f"key_file: {exc}: name its passphrase with key_passphrase_file or key_passphrase_env"
        ]) from None  # fmt: skip
    except LedgerError as exc:
        raise ConfigError(origin, [f"key_file: {exc}"]) from None
