"""``autodrs search --methods X`` for the interaction methods whose delivered model has parts
of their own (OptInter's Hadamard pairs, AutoGroup's groups): result.json, the report and a
saved model that loads with those parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.runfolder import load_model
from autodrs.spec import ArchSpec

DATA = "synthetic?rows=4000&seed=1"


@pytest.mark.parametrize("method,function", [("optinter", "hadamard"),
                                             ("autogroup", "group")])
def test_search_delivers_the_searched_interactions_end_to_end(
        method: str, function: str, tmp_path: Path, tiny_synthetic: Dataset) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", "--data", DATA, "--seed", "0", "--epochs", "2",
                                      "--threads", "1", "--no-progress", "--fast",
                                      "--methods", method, "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    stage = r["stages"][0]
    assert stage["method"] == method and stage["ranking"]
    spec = ArchSpec.from_dict(r["spec"]).validate(tiny_synthetic.schema)
    assert any(i.function == function for i in spec.interactions)
    assert (out / "report.html").stat().st_size > 0
    model, _ = load_model(out)
    part = model.hadamard if function == "hadamard" else model.groups
    assert part is not None and model.spec == spec
    assert model(next(tiny_synthetic.valid.batches(8))).shape == (8,)
