"""The shape of makd's imports, measured: cycles, upward imports, levels, library lines (docs/architecture.md).

    python tools/import_layers.py                   # against the layers contract of .importlinter
    python tools/import_layers.py --check           # exit 1 when there is a cycle or an import against the layers
    python tools/import_layers.py --json            # the numbers as JSON
    python tools/import_layers.py --layers "makd.b ; makd.a"   # another layer list, top first (";" between layers,
                                                               # "|" between independent siblings)

Read with grimp (what import-linter builds its graph with), every import counted, the late ones inside functions
included; a package that imports all of its modules to fill a registry (`pkgutil.iter_modules(__path__)`: the
distillers, tasks, dataset layouts, target-file kinds, stage-2 backends) counts as importing each, as it does when
it runs (grimp cannot see those imports; import-linter checks the modules' own; --explicit leaves them out).
A cycle is a set of two or more modules that import each other round (a strongly connected component);
an upward import goes from a module to a higher layer, or between two siblings of one layer declared independent;
the levels are the longest chain of imports from a module to the modules below it, counted in modules, with each
cycle taken as one module. Library lines: the lines of makd/**/*.py outside makd/demo/.
"""

from __future__ import annotations

import argparse
import configparser
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import makd  # noqa: E402  (the checkout's own package is the one measured)

PACKAGE = makd.__name__
CONFIG = ROOT / ".importlinter"


@dataclass
class Layer:
    """One layer of the contract: its modules (packages include their submodules) and whether they are independent."""

    modules: list[str]
    independent: bool = True


@dataclass
class Shape:
    modules: int
    imports: int
    cycles: list[list[str]]
    levels: int
    longest_chain: list[str]
    upward_imports: list[str] = field(default_factory=list)
    library_lines: int = 0


def parse_layers(text: str) -> list[Layer]:
    """Layers top first from lines (or ";"-separated parts): "a | b" independent siblings, "a : b" dependent ones."""
    layers = []
    for line in text.replace(";", "\n").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        independent = ":" not in line
        modules = [m.strip() for m in line.replace(":", "|").split("|") if m.strip()]
        layers.append(Layer(modules, independent))
    return layers


def contract_layers(path: Path = CONFIG) -> list[Layer]:
    """The layers of the first `type = layers` contract of an import-linter INI file."""
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    for section in parser.sections():
        if section.startswith("importlinter:contract:") and parser[section].get("type") == "layers":
            return parse_layers(parser[section]["layers"])
    raise SystemExit(f"{path}: no layers contract")


def import_graph(package: str = PACKAGE, registries: bool = True) -> dict[str, set[str]]:
    """{module: modules of `package` it imports}, as grimp reads them, plus (`registries`) those of the registry
    packages."""
    import grimp

    graph = grimp.build_graph(package, include_external_packages=False)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    for module in graph.modules:
        if registries and module in registry_packages(package):
            edges[module] |= set(graph.find_children(module))
    return edges


@cache
def registry_packages(package: str = PACKAGE) -> frozenset[str]:
    """Packages whose __init__ imports every module of the package (`pkgutil.iter_modules(__path__)`)."""
    root = Path(makd.__file__).parent
    found = set()
    for init in root.rglob("__init__.py"):
        if "pkgutil.iter_modules(__path__)" in init.read_text(encoding="utf-8"):
            found.add(".".join([package, *init.parent.relative_to(root).parts]))
    return frozenset(found)


def strongly_connected(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (each a sorted list)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def longest_chain(edges: Mapping[str, set[str]], components: Sequence[list[str]]) -> list[str]:
    """The longest import chain (a module, one it imports, ...), each cycle counted once (its first module)."""
    component_of = {m: i for i, comp in enumerate(components) for m in comp}
    below = {i: sorted({component_of[t] for m in comp for t in edges[m]} - {i}) for i, comp in enumerate(components)}

    @cache
    def chain(i: int) -> tuple[int, ...]:
        return (i, *max((chain(j) for j in below[i]), key=len, default=()))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(components) + 100))
    best = max((chain(i) for i in range(len(components))), key=len, default=())
    return [components[i][0] for i in best]


def layer_of(module: str, layers: Sequence[Layer]) -> tuple[int, str] | None:
    """(position top first, the layer member holding `module`), or None when no layer holds it."""
    for position, layer in enumerate(layers):
        for member in layer.modules:
            if module == member or module.startswith(member + "."):
                return position, member
    return None


def upward_imports(edges: Mapping[str, set[str]], layers: Sequence[Layer]) -> list[str]:
    """Imports against the layers: "importer -> imported (why)", sorted."""
    found = []
    for importer, imported in sorted((a, b) for a, targets in edges.items() for b in targets):
        source, target = layer_of(importer, layers), layer_of(imported, layers)
        if source is None or target is None:
            continue
        if target[0] < source[0]:
            found.append(f"{importer} -> {imported} (layer {target[1]} is above {source[1]})")
        elif target[0] == source[0] and target[1] != source[1] and layers[source[0]].independent:
            found.append(f"{importer} -> {imported} ({source[1]} and {target[1]} are independent)")
    return found


def library_lines(root: Path = Path(makd.__file__).parent, excluded: Iterable[str] = ("demo",)) -> int:
    """Lines of the package's .py files, outside the top-level folders `excluded`."""
    skip = {root / name for name in excluded}
    return sum(
        len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(root.rglob("*.py"))
        if not any(path.is_relative_to(s) for s in skip)
    )


def measure(layers: Sequence[Layer], package: str = PACKAGE, registries: bool = True) -> Shape:
    edges = import_graph(package, registries)
    components = strongly_connected(edges)
    chain = longest_chain(edges, components)
    return Shape(
        modules=len(edges),
        imports=sum(len(t) for t in edges.values()),
        cycles=[c for c in components if len(c) > 1],
        levels=len(chain),
        longest_chain=chain,
        upward_imports=upward_imports(edges, layers),
        library_lines=library_lines(),
    )


def report(shape: Shape) -> list[str]:
    lines = [
        f"modules: {shape.modules}, imports between them: {shape.imports}",
        f"cycles: {len(shape.cycles)}",
        *(f"  {' <-> '.join(c)}" for c in shape.cycles),
        f"upward imports: {len(shape.upward_imports)}",
        *(f"  {u}" for u in shape.upward_imports),
        f"levels: {shape.levels} ({' -> '.join(shape.longest_chain)})",
        f"library lines (makd/ without makd/demo/): {shape.library_lines}",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="import_layers.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", help="layer list, top first ('a | b ; c'); default: the contract of .importlinter")
    parser.add_argument("--check", action="store_true", help="exit 1 on a cycle or an upward import")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--explicit", action="store_true", help="only the imports grimp sees (no registry packages)")
    args = parser.parse_args(argv)
    layers = parse_layers(args.layers) if args.layers else contract_layers()
    shape = measure(layers, registries=not args.explicit)
    print(json.dumps(asdict(shape), indent=2) if args.json else "\n".join(report(shape)))
    return 1 if args.check and (shape.cycles or shape.upward_imports) else 0


if __name__ == "__main__":
    sys.exit(main())
