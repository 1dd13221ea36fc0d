"""The reason codes of governance (stable: the API, the CLI and docs/protocol.md use them).

A governance tx refused in block order is recorded with one of these as its outcome; a client
tx of a revoked client is refused with `revoked`. `schema` is the record kinds' own code.
"""

from typing import Final

NOT_ADMIN: Final = "not_admin"  # the signer is no admin in force
NOT_VOTER: Final = "not_voter"  # the admin's organisation runs no validator: it has no vote
DUPLICATE_PROPOSAL: Final = "duplicate_proposal"  # a proposal with this id exists
UNKNOWN_PROPOSAL: Final = "unknown_proposal"
ALREADY_APPROVED: Final = "already_approved"  # this organisation approved (or proposed) it
EXPIRED: Final = "expired"  # past its expiry height
NOT_PENDING: Final = "not_pending"  # already effective
CONFLICT: Final = "conflict"  # does not apply to the configuration in force, or its subject
# has another pending proposal
NOT_IN_FORCE: Final = "not_in_force"  # a kind of change this version does not carry out yet
REVOKED: Final = "revoked"  # a client tx signed by a revoked client
KEY_ROTATED: Final = "key_rotated"  # a client tx signed with a key rotated out
BAD_PROOF: Final = "bad_proof"  # a new validator key's proof of possession does not verify

GOV_REASONS: Final = (
    NOT_ADMIN,
    NOT_VOTER,
    DUPLICATE_PROPOSAL,
    UNKNOWN_PROPOSAL,
    ALREADY_APPROVED,
    EXPIRED,
    NOT_PENDING,
    CONFLICT,
    NOT_IN_FORCE,
    REVOKED,
    KEY_ROTATED,
    BAD_PROOF,
)
