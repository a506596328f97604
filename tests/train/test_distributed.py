"""torchrun with 2 CPU processes (gloo) against 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerwise.models import build
from layerwise.train import load_model

WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.slow


def _run(tmp_path, name, *args, procs=1):
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(WORKER), str(out), *args]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", str(procs), *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_ddp_and_fsdp_match_one_process(tmp_path):
    one = _run(tmp_path, "one", "ddp", "-", "12")
    ddp = _run(tmp_path, "ddp", "ddp", "-", "12", procs=2)
    # fit() left the process group and nothing kept it alive, so gloo's threads were joined
    # before train() returned instead of running on into interpreter shutdown, where gloo
    # can abort a worker ("terminate called without an active exception")
    assert [t for t in ddp["threads"] if "gloo" in t] == [], ddp["threads"]
    # the same global batches and gradients; only the order of float sums differs
    assert ddp["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert ddp["val"] == pytest.approx(one["val"], rel=1e-5)
    assert one["losses"][-1] < one["losses"][0] - 1.0

    run = tmp_path / "fsdp"
    fsdp = _run(tmp_path, "fsdp", "fsdp", str(run), "8", procs=2)
    assert fsdp["losses"] == pytest.approx(one["losses"][:8], rel=1e-5)
    # the gathered checkpoint is an ordinary one, and FSDP resumes from it
    model, ck = load_model(run, prefer="latest")
    assert ck.step == 8 and sorted(model.state_dict()) == sorted(build("gpt-nano", vocab_size=32, block_size=16).state_dict())
    resumed = _run(tmp_path, "fsdp2", "fsdp", str(run), "12", "resume", procs=2)
    assert resumed["losses"] == pytest.approx(one["losses"], rel=1e-5)
