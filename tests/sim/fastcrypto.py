"""Memoized Ed25519 verification for long simulator runs.

In one simulated network every signature is checked many times over: each replica verifies
each vote, each node's admission and store verify each tx and certificate again. Verification
is a pure function of (public key, domain, payload, signature), so remembering its answers
changes no result, only the time (a real verify costs ~100 µs and dominates a sweep). Every
distinct signature is still really checked, forged ones included. Scoped: `memoized_verify()`
restores the real function on exit.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import crypto

ANSWERS_MAX: Final = 200_000  # forget everything past this (a run needs far fewer)


@contextmanager
def memoized_verify() -> Iterator[None]:
    real = crypto.verify
    answers: dict[tuple[bytes, bytes, bytes, bytes], bool] = {}

    def verify(
        public_key: Ed25519PublicKey, domain: crypto.Domain, payload: bytes, signature: bytes
    ) -> bool:
        key = (public_key.public_bytes_raw(), domain.value, bytes(payload), bytes(signature))
        answer = answers.get(key)
        if answer is None:
            if len(answers) >= ANSWERS_MAX:
                answers.clear()
            answer = answers[key] = real(public_key, domain, payload, signature)
        return answer

    crypto.verify = verify
    try:
        yield
    finally:
        crypto.verify = real
