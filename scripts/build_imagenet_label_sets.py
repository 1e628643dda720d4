"""Build `src/overlock_hf/data/imagenet_label_sets.json` from the public ImageNet metadata lists.

    python scripts/build_imagenet_label_sets.py [--source ../shared/data/imagenet] [--output PATH]

The source folder holds plain-text lists, one entry a line: `imagenet_synsets.txt` (the 1000 WordNet ids in
class-index order) and, for ImageNet-A and ImageNet-R, `imagenet_{a,r}_synsets.txt` with their indices into the
1000 (`imagenet_{a,r}_indices.txt`). The script checks that each subset's wnids sit at its indices, then writes
`{"imagenet_wnids": [1000 wnids], "subsets": {"imagenet-a": [200 indices], "imagenet-r": [200 indices]}}`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "imagenet"
DEFAULT_OUTPUT = ROOT / "src" / "overlock_hf" / "data" / "imagenet_label_sets.json"
SUBSETS = {"imagenet-a": "imagenet_a", "imagenet-r": "imagenet_r"}


def read_list(path: Path) -> list[str]:
    """The non-empty lines of a text file, stripped."""
    if not path.is_file():
        raise FileNotFoundError(f"metadata list missing: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def build(source: Path) -> dict:
    """The label-set document from the lists in `source` (checked: 1000 unique wnids, subsets consistent)."""
    wnids = read_list(source / "imagenet_synsets.txt")
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise ValueError(f"{source / 'imagenet_synsets.txt'}: expected 1000 unique wnids, got {len(set(wnids))}")
    subsets = {}
    for name, stem in SUBSETS.items():
        subset_wnids = read_list(source / f"{stem}_synsets.txt")
        indices = [int(value) for value in read_list(source / f"{stem}_indices.txt")]
        if len(indices) != 200 or indices != sorted(set(indices)):
            raise ValueError(f"{stem}_indices.txt: expected 200 sorted unique indices")
        mismatched = [w for w, i in zip(subset_wnids, indices, strict=True) if wnids[i] != w]
        if mismatched:
            raise ValueError(f"{stem}: wnids not at their indices into the 1000: {mismatched[:5]}")
        subsets[name] = indices
    return {"imagenet_wnids": wnids, "subsets": subsets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of the metadata lists")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    args = parser.parse_args()
    document = build(args.source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=args.output.parent, suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(document, stream, indent=0)
        stream.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, args.output)
    print(f"wrote {args.output}: {len(document['imagenet_wnids'])} wnids, subsets {sorted(document['subsets'])}")


if __name__ == "__main__":
    main()
