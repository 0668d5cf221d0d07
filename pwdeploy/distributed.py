"""PyTorch's distributed data parallel under ``torchrun``: every rank computes, rank 0 decides and writes.

``torchrun --nproc-per-node N -m pwdeploy compress ...`` (or ``pwdeploy compress --nproc N``) starts N
processes; ``session()`` joins them into one process group (gloo on CPU, nccl on CUDA). The training and
scoring loops only call the small helpers below; with one process every helper is a no-op, so the
single-process code path is unchanged.

- training batches: the single-process global batch, split across ranks (``ShardedBatchSampler``), so
  N processes see the same samples per step as one process;
- gradients: DDP in ``train.fit``; ``all_reduce_grads`` where the model changes shape between steps (Taylor)
  or only gates train (AutoBot);
- decisions: importance scores are all-reduced and rank 0's copy broadcast (``AgreedScores``), so the
  pruning plan is computed from bit-identical inputs on every rank; ``check_same`` compares the result;
- evaluation: contiguous shards, gathered in order (``gather_in_order``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import signal
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.nn.parallel import DistributedDataParallel

from .errors import PwdeployError
from .progress import console


class DistributedError(PwdeployError):
    """Another rank of the job failed, or the ranks disagree: the run stops and writes nothing."""


class RankTerminated(DistributedError):
    """torchrun stopped this rank (SIGTERM) because another one failed."""


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def is_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if is_active() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_active() else 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if is_active() else 1


def is_main() -> bool:
    return rank() == 0


def describe() -> dict:
    """What config.json records about the job."""
    if not is_active():
        return {"world_size": 1}
    return {"world_size": world_size(), "backend": torch.distributed.get_backend(),
            "nodes": max(1, world_size() // max(1, local_world_size()))}


# ------------------------------------------------------------------ joining and leaving
def _on_sigterm(signum, _frame):
    raise RankTerminated("this rank was stopped (another rank of the torchrun job failed): no run directory "
                         "was written; see the failing rank's error above")


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[None]:
    """Join the torchrun job (if launched by torchrun) for the duration of one command.

    Collective failures (a peer that died) become one-line ``DistributedError``s; SIGTERM from torchrun
    raises, so ``finally`` blocks remove temporary run directories before the rank exits.
    """
    if not launched_by_torchrun() or is_active():
        yield
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    timeout = dt.timedelta(seconds=float(os.environ.get("PWDEPLOY_DIST_TIMEOUT", 1800)))
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _quiet_unless_main()
    try:
        yield
    except (torch.distributed.DistError, RuntimeError) as exc:
        if not _is_collective_failure(exc):
            raise
        raise DistributedError(f"rank {rank()}: another rank of the torchrun job failed or stopped "
                               f"({_first_line(exc)}); no run directory was written") from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):
            torch.distributed.destroy_process_group()


def _is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, torch.distributed.DistError):
        return True
    text = str(exc).lower()
    return any(k in text for k in ("gloo", "nccl", "connection", "peer", "timed out", "broken pipe"))


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"^\[[^\]]*\.(cc|cpp):\d+\]\s*", "", str(exc).strip())  # gloo's source location
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _quiet_unless_main() -> None:
    """Only rank 0 prints progress and results; other ranks still print their own errors (stderr)."""
    if not is_main():
        console.quiet = True
        os.environ["PWDEPLOY_NO_PROGRESS"] = "1"


def barrier() -> None:
    if is_active():
        torch.distributed.barrier()


# ------------------------------------------------------------------ launching
def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the workers must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str]) -> None:
    """Run ``python -m pwdeploy ARGV`` in ``nproc`` processes on this machine through torchrun."""
    if nproc < 1:
        raise PwdeployError(f"--nproc must be at least 1, got {nproc}")
    if launched_by_torchrun():
        raise PwdeployError("--nproc cannot be used inside torchrun: drop --nproc (torchrun sets the processes)")
    args = torchrun.parse_args(["--standalone", "--nproc-per-node", str(nproc), "--module", "pwdeploy",
                                *strip_nproc(argv)])
    # torchrun would pin every process to 1 thread; on a CPU-only run share the cores out instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # the launcher's own log lines repeat what the ranks and the one-line summary below say
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.run").setLevel(logging.CRITICAL)
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        first_rank, failure = exc.get_first_failure()  # the root cause; the others were stopped after it
        raise DistributedError(f"rank {first_rank} of {nproc} failed first (exit code {failure.exitcode}; its "
                               "error is above): no run directory was written") from None


# ------------------------------------------------------------------ data
class ShardedBatchSampler(torch.utils.data.Sampler):
    """This rank's share of every global batch; with one process, simply the shuffled batches.

    Every rank draws the same permutation per epoch (``randperm(n, generator)``, the generator seeded by
    ``--seed``), cuts it into global batches of ``--batch-size`` and takes its contiguous slice of each, so
    N processes train on exactly the batches one process would.
    """

    def __init__(self, n: int, global_batch: int, generator: torch.Generator, *, drop_last: bool = True):
        self.size, self.rank = world_size(), rank()
        if global_batch % self.size:
            raise DistributedError(f"--batch-size {global_batch} must be divisible by the {self.size} processes: "
                                   f"use a multiple of {self.size}")
        self.n, self.global_batch, self.generator, self.drop_last = n, global_batch, generator, drop_last

    def __len__(self) -> int:
        full = self.n // self.global_batch
        return full if self.drop_last or self.n % self.global_batch == 0 else full + 1

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for b in range(len(self)):
            batch = order[b * self.global_batch:(b + 1) * self.global_batch]
            yield batch[len(batch) * self.rank // self.size:len(batch) * (self.rank + 1) // self.size]


def shard(n: int) -> range:
    """Contiguous indices of ``range(n)`` this rank evaluates (shards concatenate to ``range(n)`` in order)."""
    size, r = world_size(), rank()
    return range(n * r // size, n * (r + 1) // size)


def gather_in_order(part: np.ndarray) -> np.ndarray:
    """Concatenate every rank's ``part`` in rank order (every rank gets the whole array)."""
    if not is_active():
        return part
    parts: list = [None] * world_size()
    torch.distributed.all_gather_object(parts, part)
    filled = [p for p in parts if len(p)]  # a rank with an empty shard sends a shapeless empty array
    return np.concatenate(filled, axis=0) if filled else part


# ------------------------------------------------------------------ gradients, buffers, decisions
def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when running distributed, else ``model`` itself."""
    if not is_active():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the mean of ``tensor`` over all ranks (a CPU tensor travels through the GPU under NCCL)."""
    if is_active():
        moved = tensor.to(_collective_device())
        torch.distributed.all_reduce(moved, op=torch.distributed.ReduceOp.SUM)
        tensor.copy_(moved / world_size())
    return tensor


def mean_over_ranks(value: float) -> float:
    if not is_active():
        return value
    return float(all_reduce_mean_(torch.tensor(value, dtype=torch.float64, device=_collective_device())))


def all_reduce_grads(parameters) -> None:
    """Average ``.grad`` over ranks (one flattened all-reduce), as DDP does, for loops without DDP."""
    if not is_active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean_(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_buffers(model: nn.Module) -> None:
    """Average float buffers (BatchNorm running statistics) and take rank 0's others after local updates."""
    if not is_active():
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            all_reduce_mean_(buffer.data)
        else:
            torch.distributed.broadcast(buffer.data, src=0)


def broadcast_object(obj, src: int = 0):
    if not is_active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


class AgreedScores:
    """Wraps a score function: scores are averaged over ranks and rank 0's result is what every rank uses.

    The pruning plan is a deterministic function of the scores and the model, so identical scores give
    the identical plan on every rank; other attributes (e.g. ``removed``) pass through.
    """

    def __init__(self, score_fn: Callable):
        self.score_fn = score_fn

    def __call__(self, group, name: str) -> torch.Tensor:
        scores = self.score_fn(group, name).detach().float()
        if not is_active():
            return scores
        device = scores.device
        work = scores.to(_collective_device())
        all_reduce_mean_(work)
        torch.distributed.broadcast(work, src=0)
        return work.to(device)

    def __getattr__(self, item):
        return getattr(self.score_fn, item)


def agreed(score_fn: Callable) -> Callable:
    return AgreedScores(score_fn) if is_active() else score_fn


def _collective_device() -> torch.device:
    if is_active() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_same(value, what: str) -> None:
    """Fail (on every rank) if ``value`` differs between ranks: a decision was not shared."""
    if not is_active():
        return
    values: list = [None] * world_size()
    torch.distributed.all_gather_object(values, value)
    differing = [r for r, v in enumerate(values) if v != values[0]]
    if differing:
        raise DistributedError(f"{what} differs between rank 0 and rank(s) {differing}: the ranks did not "
                               "agree; this is a bug, please report it with --debug output")


def shapes(model: nn.Module) -> list:
    """(name, shape) of every parameter: the pruned architecture, comparable across ranks."""
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


__all__ = ["AgreedScores", "DistributedError", "ShardedBatchSampler", "agreed", "all_reduce_grads",
           "all_reduce_mean_", "barrier", "broadcast_object", "check_same", "describe", "gather_in_order",
           "is_active", "is_main", "launch", "launched_by_torchrun", "local_rank", "local_world_size",
           "mean_over_ranks", "rank",
           "session", "shapes", "shard", "strip_nproc", "sync_buffers", "world_size", "wrap_ddp"]
