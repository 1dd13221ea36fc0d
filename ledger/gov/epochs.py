"""The changes that end an epoch: the validator set and the consensus parameters.

A validator added, removed or rotated (its key, its URL), or a consensus parameter set, takes
effect at an epoch boundary (docs/protocol.md section 20.8): the block that makes it effective
is the last block of its epoch, certified by the set it ends; the next block is the first of
the new epoch, executed and certified under the new configuration. One block makes at most one
such change, so an epoch adds or removes at most one validator (any two consecutive sets then
share a quorum's worth of validators). Validators keep their order: a removed one leaves a gap
that the ones after it close (their index drops by one), an added one is appended.

A new validator key proves its possession: the proposal carries `proof`, the new key's
signature in the POSSESSION domain over `encode([chain_id, validator id, public key])`, so no
one can enrol a key that someone else holds (or that no one holds). Pure: no I/O.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import crypto
from ledger.encoding import encode
from ledger.genesis import CONSENSUS_BOUNDS, ConsensusParams, Genesis, Validator
from ledger.gov.codes import BAD_PROOF, CONFLICT
from ledger.gov.config import Config
from ledger.kinds.base import require
from ledger.primitives import VALIDATORS_MAX, ValidatorIndex

CONSENSUS_PREFIX: Final = "consensus."
VALIDATORS_MIN: Final = 1  # a removal never leaves the set empty

Applied = tuple[Genesis, dict[str, Any]]  # members, and the other fields of Config it changes


def possession_payload(chain_id: str, validator_id: str, public_key: bytes) -> bytes:
    """What a new validator key signs (POSSESSION domain) to prove it is held by its proposer."""
    return encode([chain_id, validator_id, public_key])


def sign_possession(key: Ed25519PrivateKey, chain_id: str, validator_id: str) -> str:
    """The `proof` field of a proposal that enrols `key` for `validator_id` (128 hex digits)."""
    payload = possession_payload(chain_id, validator_id, crypto.public_key_bytes(key))
    return crypto.sign(key, crypto.Domain.POSSESSION, payload).hex()


def check_possession(fields: Mapping[str, Any], chain_id: str) -> None:
    """`Refused(bad_proof)` unless `proof` is the new key's signature of its enrolment."""
    raw = bytes.fromhex(fields["public_key"])
    payload = possession_payload(chain_id, fields["id"], raw)
    proof = bytes.fromhex(fields["proof"])
    ok = crypto.verify(crypto.load_public_key(raw), crypto.Domain.POSSESSION, payload, proof)
    require(ok, BAD_PROOF, "proof: not the new key's signature of [chain_id, id, public_key]")


def is_consensus_param(name: str) -> bool:
    return name.startswith(CONSENSUS_PREFIX)


def ended(config: Config, height: int) -> dict[str, Any]:
    """The Config fields a change ending the epoch at `height` sets."""
    return {"epoch": config.epoch + 1, "epoch_height": height}


def _with_validators(config: Config, validators: list[Validator]) -> Genesis:
    indexed = tuple(
        dataclasses.replace(v, index=ValidatorIndex(i)) for i, v in enumerate(validators)
    )
    return dataclasses.replace(config.members, validators=indexed)


def add_validator(config: Config, fields: Mapping[str, Any]) -> Applied:
    validator_id, organisation = fields["id"], fields["organisation"]
    require(not config.id_taken(validator_id), CONFLICT, f"the id {validator_id!r} is taken")
    known = organisation in config.organisations()
    require(known, CONFLICT, f"no organisation {organisation!r} in the configuration")
    count = len(config.members.validators)
    require(count < VALIDATORS_MAX, CONFLICT, f"the set holds {VALIDATORS_MAX} validators")
    raw = bytes.fromhex(fields["public_key"])
    require(not config.key_in_use(raw), CONFLICT, "the public key is already in force")
    new = Validator(ValidatorIndex(count), validator_id, organisation, fields["kind"], raw,
                    fields["url"], crypto.load_public_key(raw))  # fmt: skip
    members = _with_validators(config, [*config.members.validators, new])
    return members, {}


def remove_validator(config: Config, fields: Mapping[str, Any]) -> Applied:
    validator_id = fields["id"]
    gone = config.members.validator(validator_id)
    require(gone is not None, CONFLICT, f"no validator {validator_id!r} in force")
    assert gone is not None
    rest = [v for v in config.members.validators if v.id != validator_id]
    require(len(rest) >= VALIDATORS_MIN, CONFLICT, f"{validator_id!r} is the last validator")
    former = {**config.former, validator_id: gone}
    return _with_validators(config, rest), {"former": former}


def rotate_validator_key(config: Config, fields: Mapping[str, Any]) -> Applied:
    """A new key, a new URL, or both: the same key again changes only the URL."""
    validator_id = fields["id"]
    old = config.members.validator(validator_id)
    require(old is not None, CONFLICT, f"no validator {validator_id!r} in force")
    assert old is not None
    raw = bytes.fromhex(fields["public_key"])
    unused = raw == old.public_key or not config.key_in_use(raw)
    require(unused, CONFLICT, "the public key is already in force")
    new = dataclasses.replace(old, public_key=raw, key=crypto.load_public_key(raw),
                              url=fields["url"])  # fmt: skip
    validators = [new if v.id == validator_id else v for v in config.members.validators]
    return _with_validators(config, validators), {}


def set_consensus_params(config: Config, params: Mapping[str, int]) -> Genesis:
    """The consensus parameters of `params` (bounds checked by the parser) set."""
    values = dataclasses.asdict(config.members.params)
    for name, number in params.items():
        short = name.removeprefix(CONSENSUS_PREFIX)
        assert short in CONSENSUS_BOUNDS
        values[short] = number
    return dataclasses.replace(config.members, params=ConsensusParams(**values))
