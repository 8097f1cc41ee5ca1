"""Commands that align images: register one pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmap.cli.app import app, out


@app.command()
def register(
    fixed: Annotated[Path, typer.Argument(help="The image to align onto (file or DICOM series folder).")],
    moving: Annotated[Path, typer.Argument(help="The image to move (file or DICOM series folder).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Result folder to write (new).")],
    method: Annotated[str, typer.Option(help="rigid, affine, bspline (SimpleITK) or syn (ANTs).")] = "affine",
    init: Annotated[
        str,
        typer.Option(
            help="Start: auto (world coordinates when the images overlap by half, else centres of mass), "
            "world, geometry or moments."
        ),
    ] = "auto",
    fixed_label: Annotated[Path | None, typer.Option(help="Label map on the fixed image's grid (to score).")] = None,
    moving_label: Annotated[Path | None, typer.Option(help="Label map on the moving image's grid (warped).")] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the metric's voxel sampling: the same seed, the same result (to rounding).")
    ] = 0,
) -> None:
    """Align MOVING onto FIXED without training: warped image, displacement field (mm, LPS), ITK transform."""
    from medmap.tasks.registration.classical import check_options
    from medmap.tasks.registration.classical import register as align
    from medmap.tasks.registration.outputs import check_output_folder, write_result
    from medmap.tasks.registration.pair import read_pair

    check_options(method, init)
    folder = check_output_folder(output, [fixed, moving, fixed_label, moving_label])
    pair = read_pair(fixed, moving, fixed_label=fixed_label, moving_label=moving_label)
    result = align(pair, method, init=init, seed=seed)
    record = write_result(pair, result, folder)
    regularity = record["regularity"]
    line = (
        f"{method}: {result.seconds:.1f} s, fields of view {result.overlap:.0%} in common, "
        f"folded {regularity['folded_share']:.2%}"
    )
    if "mean_dice" in record:
        line += f", label Dice {record['mean_dice']['before']:.3f} -> {record['mean_dice']['after']:.3f}"
    out.print(line)
    out.print(f"wrote {folder} ({', '.join(record['files'].values())}, registration.json)")
