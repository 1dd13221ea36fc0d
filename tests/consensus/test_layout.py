"""The shape of the code: consensus/ modules stay small, the replica smallest of the large ones,
and imports point one way (cli -> node -> consensus -> ledger; within consensus/, no cycles, and
no part imports the replica that holds it)."""

import ast
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("cli", "node", "consensus", "ledger")  # each may import only those after it
MODULE_LINES_MAX: Final = 500
REPLICA_LINES_MAX: Final = 450  # handle and the normal case; every other kind of state is a part's


def imports(path: Path) -> set[str]:
    """The absolute modules `path` imports (`a.b` for `from a.b import c` and `import a.b`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def consensus_modules() -> dict[str, Path]:
    return {f"consensus.{p.stem}": p for p in sorted((ROOT / "consensus").glob("*.py"))}


def test_every_consensus_module_stays_within_its_size() -> None:
    sizes = {name: len(p.read_text().splitlines()) for name, p in consensus_modules().items()}
    assert sizes["consensus.replica"] <= REPLICA_LINES_MAX, sizes["consensus.replica"]
    assert {n: s for n, s in sizes.items() if s > MODULE_LINES_MAX} == {}


def test_the_packages_import_one_way() -> None:
    for rank, package in enumerate(PACKAGES):
        above = set(PACKAGES[:rank])
        for path in sorted((ROOT / package).rglob("*.py")):
            upward = {i for i in imports(path) if i.split(".")[0] in above}
            assert upward == set(), f"{path.relative_to(ROOT)} imports {sorted(upward)}"


def test_consensus_modules_import_each_other_without_cycles_and_never_the_replica() -> None:
    modules = consensus_modules()
    graph = {name: {i for i in imports(p) if i in modules} - {name} for name, p in modules.items()}
    importers = {name for name, deps in graph.items() if "consensus.replica" in deps}
    assert importers == set()  # the replica holds the parts; no part reaches back
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in sorted(graph[name]):
                visit(dep, (*path, name))
            done.add(name)

    for name in modules:
        visit(name, ())
