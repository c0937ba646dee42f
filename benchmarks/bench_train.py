"""Training throughput: plain PyTorch vs DeepSpeed (1 rank) vs DeepSpeed (2 ranks).

    python benchmarks/bench_train.py [--steps 30] [--batch-size 8] [--out benchmarks/results/train.json]

Same model (the tiny DexAC world model), same per-rank batch, same random store with cached
latents, one run each of ``training/train_wm.py``; samples/s is the trainer's steady-state figure
(the first step excluded). The overhead ratio is plain / DeepSpeed-1-rank samples/s; the 2-rank
figure counts the samples of both ranks. Never part of the tests; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run_one(name: str, launcher: list[str], store: Path, work: Path, steps: int, batch: int,
            extra: list[str]) -> dict:
    out = work / name
    cmd = launcher + [
        "training/train_wm.py", "--config", "configs/wm/tiny.yaml",
        "--set", f"data.store={store}", "--set", "model.tokenizer_checkpoint=null",
        "--set", "model.semantic_checkpoint=null", "--set", f"trainer.steps={steps}",
        "--set", f"trainer.batch_size={batch}", "--set", "trainer.num_workers=0",
        "--set", "trainer.checkpoint_every=0", "--set", "trainer.progress_bar=false",
        "--set", f"trainer.out_dir={out}", *extra,
    ]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "engine": summary["engine"],
        "ranks": summary["world_size"],
        "samples_per_step": summary["samples_per_step"],
        "samples_per_s": summary["samples_per_s"],
        "train_wall_s": summary["wall_s"],
        "process_wall_s": round(time.perf_counter() - start, 2),
        "final_loss": summary["final_loss"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8, help="per rank")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/train.json"))
    args = parser.parse_args()
    import deepspeed
    import torch

    from training.synthetic import write_random_store

    python = sys.executable
    deepspeed_bin = str(Path(python).parent / "deepspeed")
    ds_json = ["--deepspeed_config", "configs/deepspeed/zero2_fp32.json"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "bench.zarr"
        write_random_store(store, episodes=8, length=24, resolution=64, latent_shape=(8, 8, 8),
                           semantic_shape=((64, 128), (1, 384)))
        runs = {
            "torch_1proc": ([python], []),
            "deepspeed_zero2_1rank": ([python], ds_json),
            "deepspeed_zero2_2ranks": ([deepspeed_bin, "--num_gpus", "2", "--master_port", _port()],
                                       ds_json),
        }
        for name, (launcher, extra) in runs.items():
            results[name] = run_one(name, launcher, store, work, args.steps, args.batch_size, extra)
            print(name, results[name], flush=True)
    plain = results["torch_1proc"]["samples_per_s"]
    one = results["deepspeed_zero2_1rank"]["samples_per_s"]
    two = results["deepspeed_zero2_2ranks"]["samples_per_s"]
    report = {
        "benchmark": "training samples/s, tiny DexAC world model (semantic branch on, cached "
                     "latents), fp32, same per-rank batch",
        "steps": args.steps,
        "batch_size_per_rank": args.batch_size,
        "runs": results,
        "overhead_ratio_plain_over_deepspeed_1rank": round(plain / one, 3),
        "scaling_2ranks_over_1rank": round(two / one, 3),
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "deepspeed": deepspeed.__version__, "cuda": torch.cuda.is_available(),
            "load_avg_at_end": list(os.getloadavg()),
        },
        "note": "one run each on a shared machine; the 2 ranks share the same cores here",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
