"""Print the label / text / latent+text table (markdown) from the runs' JSON files.

Usage: python scripts/image_text_latent_table.py RUN [RUN ...] [--vae VAE_RUN]
Reads each run's train_summary.json and sweep.json (DDIM 50 rows at guidance 1 and 2, and the
class alignment), and the VAE run's vae_summary.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson


def read(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--vae", type=Path, default=None)
    args = parser.parse_args()
    print(
        "| run | parameters | steps | train wall s | train CPU s | final loss | FD g1 | FD g2 "
        "| class acc. g1 | alignment (g) | per class 0..9 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        train, sweep = read(run / "train_summary.json"), read(run / "sweep.json")
        fd = {r["guidance_scale"]: r for r in sweep["rows"] if r["num_steps"] == 50}
        a = sweep["class_alignment"]
        per_class = " ".join(f"{v:.2f}" for v in a["per_class"].values())
        print(
            f"| {run.name} | {train['parameters']:,} | {train['steps']} | {train['wall_s']:.1f} "
            f"| {train['cpu_s']:.1f} | {train['final_loss']:.4f} "
            f"| {fd[1.0]['frechet_distance']:.3f} | {fd[2.0]['frechet_distance']:.3f} "
            f"| {fd[1.0]['class_accuracy']:.3f} | {a['overall']:.3f} ({a['guidance_scale']:g}) "
            f"| {per_class} |"
        )
    if args.vae is not None:
        v = read(args.vae / "vae_summary.json")
        print(
            f"\nVAE: {v['parameters']:,} parameters, {v['steps']} steps, latents "
            f"{'x'.join(map(str, v['latent_shape']))}, wall {v['wall_s']:.1f} s, CPU "
            f"{v['cpu_s']:.1f} s, reconstruction MSE train {v['reconstruction_mse_train']:.2e}, "
            f"test {v['reconstruction_mse_test']:.2e} ({v['mse_scale']})"
        )


if __name__ == "__main__":
    main()
