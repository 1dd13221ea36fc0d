"""The replica's side of the shell contract: the actions of the event being handled, in order.

Owns the actions not yet handed to the shell, the key that signs every message that leaves,
and the deadlines the shell holds (`Timers`). Only the replica holds an outbox, and no part is
given it: the parts return values, and the replica alone turns them into actions here.
"""

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus import events as ev
from consensus import messages as m
from consensus.timers import Timers


class Outbox:
    def __init__(self, key: Ed25519PrivateKey, chain_id: str) -> None:
        self._key = key
        self._chain_id = chain_id
        self._actions: list[ev.Action] = []
        self._timers = Timers()

    def sign(self, msg: m.M) -> m.M:
        return m.sign(msg, self._key, self._chain_id)

    def send(self, peer: int, msg: m.M) -> None:
        self._actions.append(ev.Send(peer, self.sign(msg)))

    def broadcast(self, msg: m.M) -> m.M:
        signed = self.sign(msg)
        self._actions.append(ev.Broadcast(signed))
        return signed

    def emit(self, *actions: ev.Action) -> None:
        self._actions.extend(actions)

    def fired(self, timer: ev.Timer) -> None:
        """`timer`'s deadline came: the shell no longer holds it."""
        self._timers.fired(timer)

    def take(self, deadlines: Mapping[ev.Timer, int | None]) -> list[ev.Action]:
        """Every action of the event, the timer changes that bring the shell to `deadlines`
        last; the outbox is then empty."""
        self._actions += self._timers.update(deadlines)
        actions, self._actions = self._actions, []
        return actions
