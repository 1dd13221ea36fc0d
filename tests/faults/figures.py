"""Figures the fault tests measure, collected for pytest's terminal summary (conftest.py)."""

FIGURES: list[tuple[str, str]] = []


def report(name: str, text: str) -> None:
    """Record one measured figure (and print it, for `pytest -s`)."""
    FIGURES.append((name, text))
    print(f"[{name}] {text}")
