"""``segmerge data``: write a synthetic domain to disk in the Cityscapes layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segmerge.cli.app import stderr


def data(
    domain: Annotated[str, typer.Option("--domain", help="a built-in domain name, or a domain JSON/YAML file")],
    out: Annotated[Path, typer.Option("--out", help="folder to write (Cityscapes layout)")],
    n: Annotated[int, typer.Option("--n", help="number of images")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="seed (part of the file names)")] = 0,
    split: Annotated[str, typer.Option("--split", help="train, val or test (disjoint scenes)")] = "val",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing folder")] = False,
) -> None:
    """Render a synthetic street-scene domain: images, trainId/labelId/instance labels, panoptic JSON."""
    from segmerge_bench.synthetic import get_domain, load_domain, write_domain

    chosen = load_domain(domain) if Path(domain).suffix in (".json", ".yaml", ".yml") else get_domain(domain)
    written = write_domain(chosen, n, out, seed=seed, split=split, overwrite=overwrite)
    stderr.print(
        f"wrote {n} {chosen.name} images to {written} (read it with --data cityscapes:{written} --split {split})"
    )
