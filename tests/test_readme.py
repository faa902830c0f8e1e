"""The README's Python example runs as written (on a small copy of the demo data)."""

import re
import warnings
from pathlib import Path

import pytest

import pipeline as pl
from pipeline.datasets import write_demo_dataset

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(client, tmp_path, monkeypatch, capsys):
    block = re.search(r"## Python API\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no Python API example"
    code = block.group(1)
    write_demo_dataset(tmp_path / "data", n_rows=20_000, n_partitions=4, random_state=0)
    monkeypatch.chdir(tmp_path)
    # the example starts its own cluster; here it gets the test suite's
    monkeypatch.setattr(pl, "connect", lambda *a, **k: client, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=20 on small data may not converge
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.split()
    assert 0.7 < float(out[0]) <= 1.0  # model.score on the test split
    assert (tmp_path / "model" / "model.json").exists()
