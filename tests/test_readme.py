"""The README's Layout section is the map of the tree: every module listed where it is, and nothing else."""

import re

from .conftest import ROOT


def layout_files() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\s+```(.*?)```", text, re.S).group(1)
    listed, folder = set(), ""
    for line in block.splitlines():
        if not line.strip():
            continue
        name = line.split()[0]
        if not line.startswith(" "):
            folder = name if name.endswith("/") else ""
            if name.endswith(".py"):
                listed.add(name)
        elif name.endswith(".py"):
            listed.add(folder + name)
    return listed


def test_layout_lists_every_module_where_it_is():
    listed = layout_files()
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "src" / "charmlp").glob("*.py") if p.name != "__init__.py"}
    scripts = {p.name for p in ROOT.glob("*.py")}
    assert modules - listed == set(), "modules missing from the README's Layout"
    assert {p for p in listed if not (ROOT / p).is_file()} == set(), "the Layout lists files that are not there"
    assert scripts <= listed
