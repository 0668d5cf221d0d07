"""torchrun / DDP on CPU (gloo): the same run as one process, agreed pruning decisions, clean failure.

Each torchrun test starts 2 processes on the CPU; the models and data are tiny.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pwdeploy import distributed, rundir
from pwdeploy.models.checkpoint import load_model

REPO = Path(__file__).resolve().parent.parent
DATA_ARGS = ["--data", "synthetic", "-D", "size=16", "-D", "n=400", "-D", "minority_fraction=0.2"]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), PWDEPLOY_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _shapes(run: Path) -> dict:
    model, _ = load_model(run / rundir.PRUNED_PT)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


# ------------------------------------------------------------------ pieces, no process group
def test_sharded_batches_are_the_single_process_batches(monkeypatch):
    n, batch = 50, 8

    def batches(size: int, r: int) -> list:
        monkeypatch.setattr(distributed, "world_size", lambda: size)
        monkeypatch.setattr(distributed, "rank", lambda: r)
        sampler = distributed.ShardedBatchSampler(n, batch, torch.Generator().manual_seed(3))
        loader = torch.utils.data.DataLoader(range(n), batch_sampler=sampler, generator=sampler.generator)
        return [b.tolist() for _epoch in range(2) for b in loader]

    single = batches(1, 0)
    assert len(single) == 12 and all(len(b) == batch for b in single)
    assert sorted(sum(single[:6], [])) == sorted(set(sum(single[:6], [])))  # no sample twice in an epoch
    assert [a + b for a, b in zip(batches(2, 0), batches(2, 1))] == single
    with pytest.raises(distributed.DistributedError, match="divisible"):
        distributed.ShardedBatchSampler(n, 7, torch.Generator())


def test_nproc_is_removed_from_the_workers_command_line():
    assert distributed.strip_nproc(["compress", "m.pt", "--nproc", "2", "--out", "r"]) == ["compress", "m.pt",
                                                                                             "--out", "r"]
    assert distributed.strip_nproc(["train", "--nproc=4", "--out", "m"]) == ["train", "--out", "m"]


# ------------------------------------------------------------------ pruning decisions under gloo
def _prune_worker(rank: int, method: str, init_file: str, out_dir: str) -> None:
    from pwdeploy.config import PruneSettings
    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.loss import LossFn
    from pwdeploy.models import create_model
    from pwdeploy.prune import prune_to_flops
    from pwdeploy.train import batch_stream, make_loader

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = create_model("smallcnn", 2)
        data = create_dataset(DataSpec("synthetic", None, {"size": 16, "n": 200}), "train")
        stream = batch_stream(make_loader(data, 32, shuffle=True, seed=0, drop_last=True), torch.device("cpu"),
                              None)
        settings = PruneSettings(method=method, flops_reduction=0.5, taylor_batches=1, steps_between=1,
                                 autobot_steps=5)
        result = prune_to_flops(model, torch.randn(1, 3, 16, 16), method=method, flops_reduction=0.5,
                                batches=stream, loss_fn=LossFn("ce"), settings=settings)
        record = {"shapes": distributed.shapes(model), "reduction": result.reduction,
                  "weights": float(sum(p.double().sum() for p in model.parameters()))}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("method", ["taylor", "autobot", "fairgrape"])
def test_every_rank_prunes_the_same_channels(method, tmp_path):
    torch.multiprocessing.spawn(_prune_worker, args=(method, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["shapes"] == ranks[1]["shapes"]
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-6)  # gradients were averaged
    assert abs(ranks[0]["reduction"] - 0.5) <= 0.01


# ------------------------------------------------------------------ whole runs
def test_compress_with_nproc_2_equals_one_process(tiny_baseline, tmp_path):
    """`--nproc 2` (torchrun, gloo) against the same command in one process: the same pruned layer shapes
    (magnitude pruning decides from the weights alone) and per-group metrics within a few points (the two
    processes see the same global batches, but BatchNorm statistics come from half batches)."""
    from pwdeploy.cli import main

    args = ["compress", str(tiny_baseline), *DATA_ARGS, "--method", "magnitude", "--flops-reduction", "0.5",
            "--epochs", "2"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run([sys.executable, "-m", "pwdeploy", *args, "--out", str(tmp_path / "two"), "--nproc", "2"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / rundir.COMPLETE).is_file() and not list(tmp_path.glob(".*partial*"))
    assert _shapes(one) == _shapes(two)
    config = json.loads((two / rundir.CONFIG).read_text())
    assert config["distributed"]["world_size"] == 2 and config["distributed"]["backend"] == "gloo"
    assert config["precision"] == "fp32"
    r1, r2 = (json.loads((run / rundir.REPORT).read_text()) for run in (one, two))
    assert r1["macs"] == r2["macs"]
    assert r1["metrics"]["original"] == r2["metrics"]["original"]  # sharded evaluation, gathered in order
    assert abs(r1["metrics"]["pruned"]["overall"]["accuracy"] - r2["metrics"]["pruned"]["overall"]["accuracy"]) <= 3
    for group, m in r1["metrics"]["pruned"]["groups"].items():
        assert abs(m["accuracy"] - r2["metrics"]["pruned"]["groups"][group]["accuracy"]) <= 10, group
    assert r2["retrain_loss_history"] == pytest.approx(r1["retrain_loss_history"], rel=0.1)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The worker process of ``rank`` among ``parent``'s descendants (torchrun's workers)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and _descends(int(entry.name), parent):
            return int(entry.name)
    return None


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if pid == ancestor:
            return True
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's worker processes through /proc")
def test_killing_one_rank_leaves_no_complete_run(tiny_baseline, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pwdeploy",
           "compress", str(tiny_baseline), *DATA_ARGS, "--method", "magnitude", "--flops-reduction", "0.5",
           "--epochs", "300", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        victim = None
        while time.time() < deadline and proc.poll() is None:
            if list(tmp_path.glob(".run.partial-*")):  # rank 0 has started writing the run
                victim = _rank_pid(proc.pid, 1)
                if victim is not None:
                    break
            time.sleep(0.2)
        assert victim is not None, "rank 1 was not found while the run was in progress"
        time.sleep(2)  # into training
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert not out.exists()
    assert not list(tmp_path.glob(".run.partial-*")), "rank 0 left its temporary run directory behind"
    ours = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert ours and all("no run directory was written" in line for line in ours), stderr[-3000:]
