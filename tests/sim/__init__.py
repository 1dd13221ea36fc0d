"""The deterministic simulator that proves the PBFT replica (docs/testing.md).

`simulator.Simulator` runs N real replicas in one process on a simulated clock; `sweep` and
`python -m tests.sim` run seeded fault schedules; the `test_*` modules are the stories, the
1,000-seed sweeps and the memory bound.
"""
