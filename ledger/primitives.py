"""Named types and named limits shared by the ledger and consensus.

Every size the ledger accepts from outside has a maximum here, so nothing it reads is unbounded.
"""

from typing import Final, NewType

Height = NewType("Height", int)
View = NewType("View", int)
ValidatorIndex = NewType("ValidatorIndex", int)
Digest = NewType("Digest", bytes)

DIGEST_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
PUBLIC_KEY_BYTES: Final = 32

ID_BYTES_MAX: Final = 64  # chain, validator and client ids
RECORD_KEY_BYTES_MAX: Final = 256
RECORD_TYPE_BYTES_MAX: Final = 64
BODY_BYTES_MAX: Final = 16 * 1024
BODY_DEPTH_MAX: Final = 8
BODY_ITEMS_MAX: Final = 1024  # entries of any one map or list in a body
TX_BYTES_MAX: Final = 20 * 1024
NONCE_MAX: Final = 2**64 - 1
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1

BLOCK_TXS_MAX: Final = 10_000  # hard ceiling; genesis sets the operating value below it
BLOCK_BYTES_MAX: Final = 64 * 1024 * 1024
VALIDATORS_MAX: Final = 64
CLIENTS_MAX: Final = 10_000
ADMINS_MAX: Final = 1000  # governance identities (a few per organisation)
