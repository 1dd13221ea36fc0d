"""CityLedger's PBFT replica as a sans-I/O state machine.

`Replica.handle(event, now_ms) -> list[Action]`: events and the time go in, actions come out.
Nothing in this package opens a socket, reads a clock, draws a random number or touches a disk
(ruff's banned-api rule enforces it); the node and the simulator carry out the actions.
"""
