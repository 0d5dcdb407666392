"""Train the small digit CNN used as the project's offline evaluation backbone.

It reads the same 32x32 [-1, 1] digits and the same fixed held-out split as the embedded
generator (``zs2_kernels.evaluation.digits.load_digit_split``), trains with light augmentation (random
shifts of up to 2 pixels), reports held-out accuracy and writes safetensors weights (config
in the file's metadata).  Deterministic: fixed seeds and a seeded data order.

    python python/train_classifier.py --out zs2_kernels/embedded/digit_classifier.safetensors
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zs2_kernels.embedded import classifier_weights_path  # noqa: E402
from zs2_kernels.evaluation.digits import DigitClassifier, load_digit_split  # noqa: E402


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y, filling with background (-1)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=classifier_weights_path())
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = load_digit_split()
    model = DigitClassifier()
    steps_per_epoch = -(-len(data.train_labels) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.epochs * steps_per_epoch)

    start = time.perf_counter()
    for _ in tqdm(range(args.epochs), desc="classifier epochs"):
        model.train()
        order = torch.randperm(len(data.train_labels), generator=generator)
        for idx in order.split(args.batch_size):
            images = random_shift(data.train_images[idx], 2, generator)
            loss = F.cross_entropy(model(images), data.train_labels[idx], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    accuracy = (model.predict(data.test_images) == data.test_labels).float().mean().item()
    print(f"held-out accuracy {accuracy:.4f} on {len(data.test_labels)} images, "
          f"trained in {time.perf_counter() - start:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
