"""Can the named object be found in the world model's own drawing of a frame?

MPC that reads the object's place on imagined frames touches 2/20 where reading the real frame
touches 9-11/20 (docs/agents.md, docs/experiments.md E13). This separates the tokenizer from
the dynamics: for held-out seeds of the touch task (held-out colours), the shipped locator is
run on the real first frame and on the world model's reconstruction of that same frame
(encode then decode, nothing predicted), looking for

- ``real_text``: the text's colour on the real frame;
- ``reconstruction_text``: the text's colour on the reconstruction;
- ``reconstruction_drawn``: on the reconstruction, the colour the model draws where the
  object was located on the real frame (the median of the 3 x 3 pixels there), so a model that
  recolours objects is not held to the text's colour.

Error: distance (cm) from the located centre to the simulator's own object centre. Beside the
JSON, a PNG: the first three seeds' real frames (left) and reconstructions (right).

    python benchmarks/locate_in_reconstruction.py --out benchmarks/results/locate_in_reconstruction.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch


def drawn_colour(frame: np.ndarray, centre_camera: torch.Tensor,
                 camera: tuple[float, float, float, float]) -> list[float]:
    """RGB (0-1) median of the 3 x 3 pixels of ``frame`` where ``centre_camera`` is imaged."""
    from world_model.keypoint_prior import image_fractions

    h, w = frame.shape[:2]
    u, v = (float(f) for f in image_fractions(centre_camera, camera))
    col, row = int(np.clip(u * w, 1, w - 2)), int(np.clip(v * h, 1, h - 2))
    return (np.median(frame[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3), 0) / 255).tolist()


def main(argv: list[str] | None = None) -> int:
    from agents.contact import true_place
    from dexac_env.defaults import ASSETS_DIR, load_world_model
    from dexac_env.sim.env import DexACSimEnv
    from world_model.keypoint_prior import from_camera
    from world_model.object_locator import colour_of, load_locator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed-start", type=int, default=1000)
    parser.add_argument("--checkpoint", default=None, help="world model (default: shipped)")
    parser.add_argument("--tokenizer", default=None,
                        help="a tokenizer file (train_tokenizer.py) that replaces the model's own: "
                             "the tokenizer measured alone")
    parser.add_argument("--locator", default=str(ASSETS_DIR / "object_locator_touch.safetensors"))
    parser.add_argument("--out", default="benchmarks/results/locate_in_reconstruction.json")
    args = parser.parse_args(argv)

    model, locator = load_world_model(args.checkpoint), load_locator(args.locator)
    if args.tokenizer:
        from training.components import load_component

        load_component(args.tokenizer, "dexac-tokenizer", model.tokenizer,
                       model.config.tokenizer.to_dict())
    sim = DexACSimEnv(task="touch", color_split="test")
    errors: dict[str, list[float]] = {"real_text": [], "reconstruction_text": [],
                                      "reconstruction_drawn": []}
    pairs = []  # (real | reconstruction) of the first three seeds, for the figure
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        obs, info = sim.reset(seed=seed)
        real = obs["image"]
        pose = torch.from_numpy(obs["proprio"]).float()[None]
        with torch.no_grad():
            latents = model.encode(torch.from_numpy(real)[None, None])
            reconstruction = model.decode(latents)[0, -1].cpu().numpy()
            if len(pairs) < 3:
                pairs.append(np.concatenate([real, reconstruction], 1))
            truth, _ = true_place(sim)
            text_colour = torch.tensor([colour_of(info["task_description"])])
            located, _, _ = locator(torch.from_numpy(real)[None], text_colour)
            drawn = torch.tensor([drawn_colour(reconstruction, located[0], locator.config.camera)])
            for name, frame, colour in (("real_text", real, text_colour),
                                        ("reconstruction_text", reconstruction, text_colour),
                                        ("reconstruction_drawn", reconstruction, drawn)):
                centre, _, _ = locator(torch.from_numpy(np.ascontiguousarray(frame))[None], colour)
                place = from_camera(centre[:, None], pose)[0, 0]
                errors[name].append(100 * float(torch.linalg.vector_norm(place - truth)))
    sim.close()
    summary = {name: {"median_cm": float(np.median(e)), "mean_cm": float(np.mean(e)),
                      "within_2cm": int((np.array(e) <= 2.0).sum()), "per_seed_cm": e}
               for name, e in errors.items()}
    result = {"command": "python " + shlex.join(sys.argv), "seeds": args.seeds,
              "seed_start": args.seed_start, "errors": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    from PIL import Image  # noqa: PLC0415

    figure = np.concatenate(pairs, 0)
    Image.fromarray(figure).resize((figure.shape[1] * 4, figure.shape[0] * 4), Image.NEAREST) \
        .save(Path(args.out).with_suffix(".png"))  # rows: seeds; left real, right reconstruction
    for name, s in summary.items():
        print(f"{name}: median {s['median_cm']:.2f} cm, mean {s['mean_cm']:.2f} cm, "
              f"within 2 cm {s['within_2cm']}/{args.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
