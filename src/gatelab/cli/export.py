"""``gatelab export RUN --format onnx --out FILE``: a run folder's model, out of gatelab.

The graph holds what the run needs beyond the tokenizer: normalisation and scalers,
softmax on classifiers, the char LM's state in and out (see
:func:`gatelab.interop.export_run` and docs/interop.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gatelab.cli import app
from gatelab.cli.common import CommandError, clean_errors

FORMATS = ("onnx",)


@app.command("export")
@clean_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A trained run folder.", show_default=False)],
    out: Annotated[
        Path, typer.Option("--out", help="The file to write (e.g. model.onnx).", show_default=False)
    ],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset, 17 to 21.")] = 17,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a run folder's model (text or series classifier, forecaster, char LM) to ONNX:
    dynamic batch and sequence length, lengths for padded batches."""
    if format not in FORMATS:
        raise CommandError(f"--format {format!r}; expected one of {', '.join(FORMATS)}")
    from gatelab.interop import export_run

    try:
        path = export_run(run_dir, out, opset=opset)
    except ImportError as err:  # onnx missing: the message names the extra to install
        raise CommandError(str(err)) from err
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    result = {
        "out": str(path),
        "task": next((p.value for p in model.metadata_props if p.key == "gatelab_task"), ""),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "recurrent_nodes": sorted(
            {n.op_type for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN", "Scan")}
        ),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"wrote {result['out']} ({result['task']}): inputs {', '.join(result['inputs'])} -> "
        f"outputs {', '.join(result['outputs'])}; recurrent nodes: "
        f"{', '.join(result['recurrent_nodes'])}"
    )
