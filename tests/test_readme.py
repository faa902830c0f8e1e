"""The README's Python code runs as a user runs it: saved to a file, ``python file.py``, with the
real ``pl.connect()`` (on a small copy of the demo data)."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.datasets import write_demo_dataset

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_has_python_blocks():
    assert python_blocks(), "README has no ```python block"


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs_as_a_script(index, tmp_path, subprocess_env):
    write_demo_dataset(tmp_path / "data", n_rows=8_000, n_partitions=2, random_state=0)
    script = tmp_path / f"readme_{index}.py"
    script.write_text(python_blocks()[index])
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=170, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "model.score" in script.read_text():
        score = float(proc.stdout.split()[0])  # model.score on the test split
        assert 0.7 < score <= 1.0
        assert (tmp_path / "model" / "model.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_connect_at_import_time_of_a_worker_process_says_what_is_wrong(tmp_path, subprocess_env):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import pipeline as pl

        client = pl.connect(n_workers=1, dashboard_address=":0")
        client.close()
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=110, env=subprocess_env())
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "pipeline.connect() was called" in ln]
    assert lines, proc.stderr[-3000:]
    assert str(script) in lines[0] and 'if __name__ == "__main__":' in lines[0]
