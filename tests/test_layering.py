"""The package layering: a package imports only packages of lower layers (read from the
source with `ast`, imports inside functions included), so e.g. training and sampling meet
only in `hpcds.checkpoint` below both."""

import ast
from pathlib import Path

import hpcds

ROOT = Path(hpcds.__file__).parent

# lowest first; a package may import any package of an earlier layer, none of its own or a
# later one. A new package or top-level module must be placed here.
LAYERS = (
    ("errors", "indices", "cpu_malloc"),
    ("atomic",),
    ("config",),
    ("observe",),  # NVTX ranges: every layer above may mark its work
    ("grids", "nn", "distributed"),
    ("diffusion", "data", "models"),
    ("checkpoint", "plan"),
    ("train", "ensemble"),
    ("evaluate",),
    ("pipeline",),
    ("cli",),
)
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def _unit(path: Path) -> str:
    """The package (or top-level module) a source file belongs to."""
    return path.relative_to(ROOT).with_suffix("").parts[0]


def _imported_units(path: Path) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from hpcds import x` names the unit x (or a name of hpcds/__init__.py)
            names = ([f"hpcds.{a.name}" for a in node.names] if node.module == "hpcds"
                     else [node.module])
        else:
            continue
        units.update(n.split(".")[1] for n in names if n.startswith("hpcds."))
    return units - {"__version__"}


def _sources():
    return [p for p in sorted(ROOT.rglob("*.py")) if p.name != "__init__.py" or p.parent != ROOT]


def test_every_package_has_a_layer():
    units = {_unit(p) for p in _sources()}
    assert units - set(RANK) == set(), "place the new package in LAYERS"


def test_packages_import_only_lower_layers():
    bad = []
    for path in _sources():
        unit = _unit(path)
        for other in _imported_units(path) - {unit}:
            if RANK.get(other, len(LAYERS)) >= RANK[unit]:
                bad.append(f"{path.relative_to(ROOT.parent)} imports hpcds.{other}")
    assert bad == []


def test_ensemble_imports_nothing_from_train():
    """Sampling must not depend on training: what both need is in hpcds.checkpoint."""
    for path in sorted((ROOT / "ensemble").rglob("*.py")):
        assert "train" not in _imported_units(path), path
