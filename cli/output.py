"""How the CLI prints: plain tables for people, `--json` for programs, a progress bar on stderr.

Results go to stdout, progress and errors to stderr, so `--json` output can always be piped.
"""

import datetime
import json
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

import click
from click._termui_impl import ProgressBar

LONG_CHAIN_BLOCKS: Final = 200  # from this many blocks on, verification shows a progress bar
VALUE_CHARS_MAX: Final = 72  # a record value wider than this is cut in tables (--json has all)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, headers first."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """`name: value` lines with the values aligned."""
    width = max(len(name) for name, _ in pairs) + 1
    return "\n".join(f"{(name + ':').ljust(width)} {value}" for name, value in pairs)


def short(hex_digest: str, chars: int = 16) -> str:
    return hex_digest[:chars]


def timestamp(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{ms % 1000:03d}Z"


def compact(value: Any, chars: int = VALUE_CHARS_MAX) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    return text if len(text) <= chars else text[: chars - 1] + "…"


class Progress:
    """A progress bar on stderr that appears only once a run is known to be long."""

    def __init__(self, label: str, threshold: int = LONG_CHAIN_BLOCKS) -> None:
        self._label = label
        self._threshold = threshold
        self._bar: ProgressBar[int] | None = None
        self._done = 0

    def __enter__(self) -> "Progress":
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if total < self._threshold:
                return
            self._bar = click.progressbar(length=total, label=self._label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
