"""Data pipeline, DDP and mixed-precision throughput at CelebA's image size, measured in one run.

    python benchmarks/scale.py             # 3000 generated CelebA-format JPEGs at 218x178
    python benchmarks/scale.py --quick     # 1000 images, one round

On a generated dataset in CelebA's on-disk format (JPEGs at 218x178, like img_align_celeba):
1. the input pipeline alone, one epoch (batches of 64): decoding every JPEG each epoch (workers 0, the old
   default) vs decoding with workers vs the decoded-image cache without and with workers; the cache's
   one-time build rate. Loaders deliver uint8 batches and the device normalises them (on a GPU that is
   almost free); the normalising is also timed on this CPU, where it costs about as much as decoding;
2. one training epoch of pwdeploy's SmallCNN at 218x178 over the first ``--train-images`` (640) images,
   decoding vs cache + workers (the model is small on purpose: on a CPU a ResNet-18 epoch would measure the
   model, not the pipeline);
3. DDP on the CPU (gloo): the same training epoch in 1 vs 2 processes under torchrun, on the same cores;
4. on a CUDA GPU only: ResNet-18 at 218x178 training fp32 vs bf16 (the model alone, batches already on the
   GPU), the cached pipeline alone, and the projected wall time of the CelebA recipe (``compress --method
   taylor`` + 1 retraining epoch on 162,770 images). Without a GPU this part is skipped and says so.

The sides of every comparison alternate within one run (rounds), and the median per side is reported.
Results: tables on the terminal and benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PWDEPLOY_NO_PROGRESS", "1")

RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
CELEBA_SIZE = (218, 178)
CELEBA_TRAIN, CELEBA_TEST = 162_770, 19_962
BATCH = 64


# ------------------------------------------------------------------ the dataset
def write_dataset(root: Path, n: int, seed: int = 0) -> Path:
    """``root/celeba`` in torchvision's layout: n JPEGs at 218x178 (90% train, 10% test). Images are smooth
    colour fields plus mild noise, so they compress and decode like photographs (~10 KB), not like noise."""
    from PIL import Image

    folder = root / "celeba"
    images = folder / "img_align_celeba"
    if (folder / "list_eval_partition.txt").is_file() and len(list(images.glob("*.jpg"))) == n:
        return root
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    attrs = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
             "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
             "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
             "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
             "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
    values = rng.choice([-1, 1], size=(n, len(attrs)))
    h, w = CELEBA_SIZE
    rows, parts = [], []
    for i in range(n):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(base + rng.normal(0, 4, size=base.shape), 0, 255).astype(np.uint8)
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(pixels).save(images / name, quality=90)
        rows.append(name + " " + " ".join(f"{v:2d}" for v in values[i]))
        parts.append(f"{name} {0 if i < 0.9 * n else 2}\n")
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(attrs) + " \n" + "\n".join(rows) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(parts))
    return root


def open_train(root: Path, cache_dir: Path | None):
    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.data.cache import use_cache

    ds = create_dataset(DataSpec("celeba", str(root), {"size": list(CELEBA_SIZE)}), "train")
    if cache_dir is not None:
        use_cache(ds, "on", cache_dir)
    return ds


# ------------------------------------------------------------------ 1-2: pipeline and training epoch
def pipeline_epoch(ds, workers: int | None, normalise: bool = False) -> float:
    """Images/s of iterating one shuffled epoch of ``ds`` (batches of 64): the uint8 batches the loader
    delivers, or (``normalise``) the float32 model input after normalising them on this CPU."""
    import torch

    from pwdeploy.config import LoaderSettings
    from pwdeploy.train import make_loader, model_input

    loader = make_loader(ds, BATCH, shuffle=True, drop_last=True, loader=LoaderSettings(workers=workers))
    to_input = model_input(loader, torch.device("cpu")) if normalise else (lambda x: x)
    start, seen = time.perf_counter(), 0
    for x, *_ in loader:
        seen += len(to_input(x))
    return seen / (time.perf_counter() - start)


def head(ds, n: int):
    """The first ``n`` images of ``ds`` as a dataset (an attached cache stays valid: its rows are indices)."""
    import copy

    part = copy.copy(ds)
    part.paths, part.labels, part.groups = ds.paths[:n], ds.labels[:n], ds.groups[:n]
    return part


def training_epoch(ds, workers: int | None, device: str = "cpu") -> float:
    """Images/s of one training epoch of SmallCNN (CE loss) over ``ds`` through ``pwdeploy.train.fit``."""
    import torch

    from pwdeploy.config import LoaderSettings, TrainSettings
    from pwdeploy.loss import LossFn
    from pwdeploy.models import create_model
    from pwdeploy.train import fit

    torch.manual_seed(0)
    model = create_model("smallcnn", 2)
    settings = TrainSettings(epochs=1, batch_size=BATCH)
    start = time.perf_counter()
    fit(model, ds, LossFn("ce"), settings, torch.device(device), loader=LoaderSettings(workers=workers))
    return (len(ds) // BATCH) * BATCH / (time.perf_counter() - start)


def alternate(sides: dict, rounds: int) -> dict:
    """Run every side once per round, in turn; median images/s per side."""
    runs = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            runs[name].append(fn())
    return {name: {"images_per_s": statistics.median(v), "runs": [round(x, 1) for x in v]} for name, v in runs.items()}


def measure_pipeline(root: Path, cache_dir: Path, rounds: int, train_images: int) -> dict:
    from pwdeploy.data.loading import auto_workers, cpus_per_process

    plain = open_train(root, None)
    start = time.perf_counter()
    cached = open_train(root, cache_dir)  # a miss: builds the cache
    build_s = time.perf_counter() - start
    cores = cpus_per_process()
    decoders, readers = max(1, min(8, cores - 1)), max(1, min(4, cores - 1))  # as auto_workers, at least 1
    auto = auto_workers(cached)  # the default with the cache (0 below 4 cores)
    pipeline = alternate({
        "decode every epoch, 0 workers": lambda: pipeline_epoch(plain, 0),
        f"decode every epoch, {decoders} workers": lambda: pipeline_epoch(plain, decoders),
        "cache, 0 workers": lambda: pipeline_epoch(cached, 0),
        f"cache, {readers} workers": lambda: pipeline_epoch(cached, readers),
    }, rounds)
    normalised = alternate({
        "decode every epoch, 0 workers": lambda: pipeline_epoch(plain, 0, normalise=True),
        f"cache, {auto} workers (default)": lambda: pipeline_epoch(cached, auto, normalise=True),
    }, rounds)
    training = alternate({
        "decode every epoch, 0 workers": lambda: training_epoch(head(plain, train_images), 0),
        f"cache, {auto} workers (default)": lambda: training_epoch(head(cached, train_images), auto),
    }, rounds)
    return {"images": len(plain), "workers_auto_with_cache": auto, "cache_build_s": build_s,
            "cache_build_images_per_s": len(plain) / build_s, "pipeline": pipeline,
            "pipeline_normalised_on_cpu": normalised, "training_smallcnn": training,
            "training_images": min(train_images, len(plain))}


# ------------------------------------------------------------------ 3: DDP on the CPU
def ddp_worker(root: Path, cache_dir: Path, out: Path, train_images: int) -> None:
    """Run under torchrun: one training epoch; rank 0 writes its images/s."""
    from pwdeploy import distributed

    with distributed.session("cpu"):
        ds = open_train(root, cache_dir)
        training_epoch(head(ds, 2 * BATCH), 0)  # warm-up: allocations, DDP buckets
        rate = training_epoch(head(ds, train_images), 0)
        if distributed.is_main():
            out.write_text(json.dumps({"images_per_s": rate, "world_size": distributed.world_size()}))


def measure_ddp(root: Path, cache_dir: Path, rounds: int, train_images: int) -> dict:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def run(nproc: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rate.json"
            env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(max(1, cpus // nproc)))
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                            str(nproc), __file__, "--ddp-worker", str(root), str(cache_dir), str(out),
                            "--train-images", str(train_images)],
                           check=True, env=env, capture_output=True, text=True, timeout=1800)
            return json.loads(out.read_text())["images_per_s"]

    result = alternate({"1 process": lambda: run(1), "2 processes (gloo)": lambda: run(2)}, rounds)
    result["threads_per_process"] = {"1 process": cpus, "2 processes (gloo)": max(1, cpus // 2)}
    return result


# ------------------------------------------------------------------ 4: the GPU part
def measure_gpu(root: Path, cache_dir: Path, steps: int) -> dict:
    """ResNet-18 at 218x178 fp32 vs bf16 (model alone), the cached pipeline alone, the projected recipe."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine (none was lent to this session): the fp32-vs-bf16, "
                           "pipeline-vs-model and CelebA projection figures need one"}
    from pwdeploy.config import LoaderSettings
    from pwdeploy.data.loading import auto_workers
    from pwdeploy.train import make_loader, model_input

    device = torch.device("cuda")
    model_rates = {p: _resnet18_rate(p, device, steps) for p in ("fp32", "bf16")}
    inference = _resnet18_rate("bf16", device, steps, train=False)
    ds = open_train(root, cache_dir)
    loader = make_loader(ds, 256, shuffle=True, drop_last=True, loader=LoaderSettings(), device=device)
    to_input = model_input(loader, device)
    for _ in range(2):  # two epochs: the first starts the workers
        start, seen = time.perf_counter(), 0
        for x, *_ in loader:
            seen += len(to_input(x))
        torch.cuda.synchronize()
        pipeline = seen / (time.perf_counter() - start)
    return {"gpu": torch.cuda.get_device_name(0), "workers": auto_workers(ds),
            "resnet18_train_images_per_s": model_rates, "resnet18_inference_bf16_images_per_s": inference,
            "cached_pipeline_images_per_s": pipeline,
            "bottleneck": "GPU (model)" if pipeline > model_rates["bf16"] else "data loader",
            "celeba_recipe": project_recipe(model_rates, inference, pipeline)}


def _resnet18_rate(precision: str, device, steps: int, train: bool = True) -> float:
    import torch

    from pwdeploy.models import create_model
    from pwdeploy.precision import Precision

    model = create_model("torchvision:resnet18", 1).to(device).train(train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = Precision(precision, device)
    x = torch.randn(256, 3, *CELEBA_SIZE, device=device)
    y = torch.randint(0, 2, (256,), device=device).float()
    for i in range(steps + 5):  # 5 warm-up steps
        if i == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with amp.autocast(), torch.set_grad_enabled(train):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1).float(), y)
        if train:
            optimizer.zero_grad(set_to_none=True)
            amp.step(loss, optimizer)
    torch.cuda.synchronize()
    return steps * 256 / (time.perf_counter() - start)


def celeba_taylor_plan() -> dict:
    """The pruning budget's schedule for the CelebA recipe (configs/celeba.yaml, Taylor) on CelebA's training
    split: what compress would plan there (pwdeploy.prune.budget), in batches and sample passes."""
    from pwdeploy.config import build_config
    from pwdeploy.prune.budget import plan_for

    config = build_config({"prune": {"method": "taylor"}}, data_name="celeba")
    return plan_for(config, CELEBA_TRAIN, num_groups=2).to_dict()


def project_recipe(model_rates: dict, inference: float, pipeline: float) -> dict:
    """Wall time of ``compress --method taylor`` + 1 retraining epoch on CelebA from the measured rates.

    Taylor: the sample passes the pruning budget plans for CelebA (``celeba_taylor_plan``; the configured
    schedule, since 162,770 images are far above the budget's floor) in fp32; the original model's outputs over
    the training set and 4 evaluations of the test set (inference); one retraining epoch in bf16. Each part
    runs at the slower of the model and the loader. Excludes the one-time cache build, ONNX export and the MACs
    counting between pruning steps."""
    train_bf16 = min(model_rates["bf16"], pipeline)
    train_fp32 = min(model_rates["fp32"], pipeline)
    infer = min(inference, pipeline)
    plan = celeba_taylor_plan()
    parts = {"taylor importance + adaptation (fp32)": plan["planned_passes"] / train_fp32,
             "original-model outputs (train set)": CELEBA_TRAIN / infer,
             "4 test-set evaluations": 4 * CELEBA_TEST / infer,
             "1 retraining epoch (bf16)": CELEBA_TRAIN / train_bf16}
    return {"parts_s": parts, "total_min": sum(parts.values()) / 60, "goal_min": 10, "prune_budget": plan}


# ------------------------------------------------------------------ report
def show(results: dict) -> None:
    from rich.table import Table

    from pwdeploy.progress import console

    p = results["pipeline"]
    table = Table(title=f"{p['images']} JPEGs at 218x178 (training: the first {p['training_images']}), "
                        f"{results['cpus']} CPU cores")
    table.add_column("measurement")
    table.add_column("side")
    table.add_column("images/s", justify="right")
    table.add_column("vs first", justify="right")
    for title, block in (("loader alone (uint8 batches)", p["pipeline"]),
                         ("loader + normalising on the CPU", p["pipeline_normalised_on_cpu"]),
                         ("training epoch, SmallCNN", p["training_smallcnn"]),
                         ("DDP training epoch, SmallCNN", results.get("ddp", {}))):
        sides = {k: v for k, v in block.items() if isinstance(v, dict) and "images_per_s" in v}
        first = next(iter(sides.values()), {}).get("images_per_s")
        for side, v in sides.items():
            table.add_row(title, side, f"{v['images_per_s']:,.0f}", f"{v['images_per_s'] / first:.2f}x")
            title = ""
    console.print(table)
    console.print(f"cache build (one time): {p['cache_build_s']:.1f} s, {p['cache_build_images_per_s']:,.0f} images/s")
    gpu = results["gpu"]
    plan = gpu.get("celeba_recipe", {}).get("prune_budget") or celeba_taylor_plan()
    console.print(f"CelebA recipe, pruning budget: {plan['steps']} Taylor steps x ({plan['importance_batches']} + "
                  f"{plan['adaptation_batches']}) batches of {plan['batch_size']} = {plan['planned_passes']:,} sample "
                  f"passes ({plan['planned_passes'] / CELEBA_TRAIN:.2f} epochs of {CELEBA_TRAIN:,} images)")
    if "skipped" in gpu:
        console.print(f"GPU part skipped: {gpu['skipped']}")
    else:
        recipe = gpu["celeba_recipe"]
        console.print(f"{gpu['gpu']}: ResNet-18 train fp32 {gpu['resnet18_train_images_per_s']['fp32']:,.0f} / bf16 "
                      f"{gpu['resnet18_train_images_per_s']['bf16']:,.0f} images/s; cached pipeline "
                      f"{gpu['cached_pipeline_images_per_s']:,.0f} images/s -> bottleneck: {gpu['bottleneck']}; "
                      f"projected CelebA Taylor + 1 epoch: {recipe['total_min']:.1f} min (goal < 10)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 images, one round")
    parser.add_argument("--images", type=int, default=None, help="generated JPEGs (default 3000, quick 1000)")
    parser.add_argument("--rounds", type=int, default=None, help="alternations per comparison (default 2, quick 1)")
    parser.add_argument("--data", type=Path, default=None, help="folder for the generated dataset (kept)")
    parser.add_argument("--train-images", type=int, default=640,
                        help="images in the timed training epochs (SmallCNN on the CPU is slow at 218x178)")
    parser.add_argument("--gpu-steps", type=int, default=30, help="timed ResNet-18 steps per precision (GPU)")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--ddp-worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(*args.ddp_worker, args.train_images)
        return 0
    n = args.images or (1000 if args.quick else 3000)
    rounds = args.rounds or (1 if args.quick else 2)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pwdeploy-scale-") as tmp:
        root = write_dataset(args.data or Path(tmp) / "data", n)
        cache_dir = Path(tmp) / "cache"
        results = {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                   "machine": platform.processor() or platform.machine(), "rounds": rounds,
                   "mean_jpeg_kb": float(np.mean([p.stat().st_size for p in
                                                  (root / "celeba" / "img_align_celeba").glob("*.jpg")]) / 1024)}
        results["pipeline"] = measure_pipeline(root, cache_dir, rounds, args.train_images)
        results["ddp"] = {"skipped": "--skip-ddp"} if args.skip_ddp else \
            measure_ddp(root, cache_dir, rounds, args.train_images)
        results["gpu"] = measure_gpu(root, cache_dir, args.gpu_steps)
    results["wall_s"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    show(results)
    print(f"wrote {args.out} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
