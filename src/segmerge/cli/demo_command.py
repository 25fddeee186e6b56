"""``segmerge demo``: a real plan and merge on tiny checkpoints the package generates.

The checkpoints are a SegFormer family in the layouts users hold (two mmseg-style
DAFormer ``.pth`` files and a Hugging Face folder) that share one starting point. The
benchmark issue replaces the random perturbations with trained models and scores them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from segmerge import api
from segmerge.cli.app import app, stdout, user_errors
from segmerge.cli.plan_view import render_plan


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for the generated checkpoints and merges")] = Path(
        "segmerge-demo"
    ),
) -> None:
    """Generate tiny checkpoints, show a merge plan, merge them three ways, and run the result."""
    from segmerge.zoo.toy_checkpoints import write_toy_checkpoints

    start = time.perf_counter()
    paths = write_toy_checkpoints(out / "checkpoints")
    gta, synthia, hf = paths["gta_daformer"], paths["synthia_daformer"], paths["cityscapes_segformer"]
    stdout.print(
        f"[bold]1. checkpoints[/] written to {out / 'checkpoints'}: {', '.join(p.name for p in paths.values())}"
    )

    stdout.print("\n[bold]2. plan[/]: two DAFormer checkpoints from different source datasets (anchor: GTA)")
    render_plan(api.plan([str(gta), str(synthia)], check_relatedness=True), stdout)

    merges = [
        ("same architecture, layer-wise (METHOD.md defaults)", [gta, synthia], out / "gta+synthia.pth", {}),
        ("uniform soup", [gta, synthia], out / "soup.safetensors", {"method": "linear"}),
        (
            "different layouts: HF SegFormer anchor + DAFormer donor, encoder renamed",
            [hf, gta],
            out / "segformer+gta",
            {"rename": {1: [(r"^backbone\.", "segformer.encoder.")]}, "end_weight": 0.75},
        ),
    ]
    stdout.print("\n[bold]3. merges[/]")
    for title, models, target, options in merges:
        api.merge([str(m) for m in models], output=target, overwrite=True, **options)
        stdout.print(f"  {title}: [green]{target}[/]")

    stdout.print("\n[bold]4. the merged Hugging Face folder loads and runs[/]")
    import torch
    import transformers
    from transformers import SegformerForSemanticSegmentation

    transformers.utils.logging.disable_progress_bar()
    model, info = SegformerForSemanticSegmentation.from_pretrained(out / "segformer+gta", output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise RuntimeError(f"merged folder does not match the model: {info}")
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.rand(1, 3, 64, 128)).logits
    stdout.print(
        f"  SegformerForSemanticSegmentation: every weight loaded; logits {tuple(logits.shape)} "
        "(19 classes at stride 4)"
    )
    stdout.print(
        f"  reproduce any output: segmerge recipe {out / 'gta+synthia.pth'} > r.yaml && "
        "segmerge merge -r r.yaml -o x.pth"
    )
    stdout.print(f"\ndone in {time.perf_counter() - start:.1f} s")
