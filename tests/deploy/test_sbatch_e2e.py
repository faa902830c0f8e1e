"""deploy/slurm/pipeline-cpu.sbatch run as a plain bash script on loopback, with a stand-in
`srun` that starts the tasks on this machine: the scheduler, the workers and `pipeline run`
exactly as the script starts them inside an allocation. No SLURM needed."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from deploy_specs import CONFIGS, SLURM

from pipeline.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N_TASKS = 2

# srun stand-in: start --ntasks copies of the command here (their pids into $FAKE_SRUN_PIDS),
# pass SIGTERM on to them and wait for them, as srun does.
FAKE_SRUN = """#!/bin/sh
n=1
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) n="${1#--ntasks=}"; shift ;;
    --*) shift ;;
    *) break ;;
  esac
done
pids=""
i=0
while [ "$i" -lt "$n" ]; do
  "$@" &
  pids="$pids $!"
  echo "$!" >> "$FAKE_SRUN_PIDS"
  i=$((i + 1))
done
trap 'kill $pids 2>/dev/null; wait; exit 143' TERM INT
wait
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def task_pids(tmp_path):
    """The file the fake srun writes its task pids to; tasks still alive at the end are
    killed by pid."""
    path = tmp_path / "srun-tasks.pids"
    path.touch()
    yield path
    for pid in map(int, path.read_text().split()):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_cpu_sbatch_script_runs_the_job_in_its_allocation(tmp_path, processes, free_port,
                                                           task_pids):
    from pipeline.datasets import write_demo_dataset

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "srun").write_text(FAKE_SRUN)
    (bindir / "srun").chmod(0o755)

    data = tmp_path / "input"
    write_demo_dataset(data, n_rows=5000, n_partitions=4)
    config = yaml.safe_load((CONFIGS / "slurm.yaml").read_text())
    config["data"]["path"] = str(data)
    config["train"]["max_iter"] = 2
    config["train"]["checkpoint_dir"] = str(tmp_path / "out" / "checkpoints")
    config["output"]["dir"] = str(tmp_path / "out")
    config_path = tmp_path / "slurm.yaml"
    config_path.write_text(yaml.safe_dump(config))

    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bindir), str(Path(sys.executable).parent),
                                 os.environ["PATH"]]),
        # what SLURM sets in the batch step
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": str(N_TASKS),
        "TMPDIR": str(tmp_path),
        # the script's knobs, pointed at loopback and free ports
        "PIPELINE_SCHEDULER_HOST": "127.0.0.1",
        "PIPELINE_SCHEDULER_PORT": str(free_port()),
        "PIPELINE_DASHBOARD_PORT": str(free_port()),
        "PIPELINE_RUN_DIR": str(run_dir),
        "FAKE_SRUN_PIDS": str(task_pids),
    }
    script = processes.start("sbatch", ["bash", str(SLURM / "pipeline-cpu.sbatch"),
                                        str(config_path)], env=env, cwd=tmp_path)
    code = script.wait(timeout=200)
    log = processes.log("sbatch")
    assert code == 0, f"{log}\n{(run_dir / 'workers.log').read_text(errors='replace')[-3000:]}"
    assert f"{N_TASKS} workers joined" in log
    assert "test accuracy" in log

    # The effective config: the same job, pointed at the allocation's scheduler.
    effective = load_config(run_dir / "job.yaml")
    assert effective.cluster.kind == "address"
    assert effective.cluster.address == f"tcp://127.0.0.1:{env['PIPELINE_SCHEDULER_PORT']}"
    assert effective.model == load_config(config_path).model
    assert (tmp_path / "out" / "model").is_dir()
    assert (tmp_path / "out" / "report.html").is_file()
    assert "analytics.dashboard" in (run_dir / "scheduler.log").read_text()
    # The script's EXIT trap stopped the workers (and waited for them) before it returned.
    pids = [int(p) for p in task_pids.read_text().split()]
    assert len(pids) == N_TASKS
    assert [p for p in pids if _alive(p)] == []
