"""Record kinds with rules: one module per kind (schema and rule), the table of them
(`ledger.kinds.table`) and their deterministic execution in block order
(`ledger.kinds.execute`). Pure: no I/O; the rule state comes in through a `get` function."""
