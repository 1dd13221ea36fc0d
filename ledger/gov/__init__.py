"""Governance: the configuration in force and the `_gov/` transactions that change it.

`config` holds the configuration in force (the genesis with every effective change applied),
`changes` the kinds of change (their bodies, what each conflicts with, how each applies),
`machine` the proposals and approvals executed in block order, `history` how the configuration
of any state or height is derived from the chain. Pure: no I/O, no clock.
"""
