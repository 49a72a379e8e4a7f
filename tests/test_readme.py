"""The README's Layout section is the map of the tree: every module and package listed where it is, nothing else."""

import re

from .conftest import ROOT


def layout_entries() -> set[str]:
    """The paths the Layout's tree names: indentation (two spaces a level) nests a line in the folder above it."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\s+```(.*?)```", text, re.S).group(1)
    listed, folders = set(), []  # folders: (depth, path) of the open folders
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        folders = [(d, f) for d, f in folders if d < depth]
        path = (folders[-1][1] if folders else "") + name
        listed.add(path)
        if name.endswith("/"):
            folders.append((depth, path))
    return listed


def test_the_layout_parser_nests_by_indentation():
    assert {"src/charmlp/data/vocab.py", "src/charmlp/errors.py", "train.py"} <= layout_entries()


def test_layout_lists_every_module_and_package_where_it_is():
    listed = layout_entries()
    src = ROOT / "src"
    modules = {
        str(p.relative_to(ROOT)) for p in src.rglob("*.py") if p.name != "__init__.py" and "egg-info" not in str(p)
    }
    packages = {f"{p.parent.relative_to(ROOT)}/" for p in (src / "charmlp").glob("*/__init__.py")}
    scripts = {p.name for p in ROOT.glob("*.py")}
    listed_py = {p for p in listed if p.endswith(".py")}
    assert modules - listed == set(), "modules missing from the README's Layout (or listed under another folder)"
    assert packages - listed == set(), "packages missing from the README's Layout"
    assert {p for p in listed_py if not (ROOT / p).is_file()} == set(), "the Layout lists modules that are not there"
    assert scripts <= listed
