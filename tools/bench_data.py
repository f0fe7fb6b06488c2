"""Benchmark the training input pipeline: loader img/s per CPU core, former float path vs the uint8 path, and
whether a named student would wait for it.

Images are generated here (smooth random photos with noise, 500x375 scaled to each size), written as JPEG
and PNG. For every size (--sizes), format and cached / not cached, rounds alternate the two paths in one
process, so load on a shared machine hits both:

- former: the per-sample float pipeline as it was before the uint8 path (PIL crop + resize + flip, to float,
  normalise, per sample; float batches collated), rebuilt below from that version's code;
- uint8: the current AspectDataset + TrainTransform (uint8 tensors, uint8 batches); "+ device step" adds
  DevicePreprocess (float conversion + normalisation of the batch) run on the CPU, which is where it runs
  when there is no GPU (on a GPU it runs there and costs the loader nothing).

Both use the official recipe (RandomResizedCrop + flip) and per-sample seeds. Rates are images per CPU-second
of this process with NUM_WORKERS 0 and 1 torch thread, i.e. per core; a run with N workers loads about N
times that. Then the student's forward + backward + SGD step img/s on the device (random tensors), and
"input-bound" when the loader, with the workers DATASET.NUM_WORKERS -1 would start here, delivers fewer
images per second than the model consumes. On CUDA the GPU utilisation over the model loop is printed.

  python tools/bench_data.py                       # 32, 64 and 224 px, resnet18
  python tools/bench_data.py --sizes 224 --images 96 --rounds 5 --student resnet18 --batch 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from makd.data.datasets import AspectDataset  # noqa: E402
from makd.data.device_batch import DevicePreprocess  # noqa: E402
from makd.data.image_cache import cache_images  # noqa: E402
from makd.data.image_index import ImageIndex  # noqa: E402
from makd.data.loader_settings import worker_count  # noqa: E402
from makd.data.transforms import WHOLE_IMAGE, AugmentSpec, View, sample_seed, train_transform  # noqa: E402
from makd.models import build_student  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
RESIZE_RATIO = 1.143  # the default: the cache keeps shorter side round(size * 1.143)


class FormerTrainTransform:
    """The training transform before the uint8 path (rrc + flip on PIL, then per-sample float + normalise)."""

    def __init__(self, image_size: int) -> None:
        from torchvision.transforms import v2

        self.size, self.spec = int(image_size), AugmentSpec()
        self.tail = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, View]:
        from torchvision import transforms as v1
        from torchvision.transforms.v2 import functional as F

        width, height = image.size
        top, left, h, w = v1.RandomResizedCrop.get_params(image, list(self.spec.scale), list(self.spec.ratio))
        cropped = F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        flipped = bool(torch.rand(1) < 0.5)
        if flipped:
            cropped = F.horizontal_flip(cropped)
        return self.tail(cropped), View(hflip=flipped, crop_area=(h * w) / (height * width))


class FormerDataset(Dataset):
    """AspectDataset's item loop before the uint8 path: a PIL image per sample, seeded, float out."""

    def __init__(self, index: ImageIndex, transform: FormerTrainTransform) -> None:
        self.index, self.transform, self.no_row = index, transform, torch.empty(0)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        image, view = self.index.load(i), WHOLE_IMAGE
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed(0, 0, i))
            image, view = self.transform(image)
        aspects = self.no_row.clone()
        mask = torch.isfinite(aspects).to(torch.float32)
        return {"image": image, "label": self.index.labels[i], "aspects": aspects, "aspect_mask": mask,
                "view": view.as_item(), "index": i}  # fmt: skip


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour regions plus noise: compresses and decodes like a photo, unlike pure noise."""
    coarse = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.int16)
    return Image.fromarray(np.clip(smooth + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8))


def write_images(root: Path, fmt: str, count: int, size: int) -> ImageIndex:
    """`count` images of 500x375 scaled by size / 224 (at least the crop size), as `fmt` files."""
    scale = max(size / 224, 1.0 * size / 375 + 1e-9)
    width, height = max(size, round(500 * scale)), max(size, round(375 * scale))
    rng = np.random.default_rng(size)
    folder = root / f"{fmt}_{size}"
    folder.mkdir(parents=True)
    paths = []
    for k in range(count):
        path = folder / f"img{k}.{fmt}"
        image = photo(rng, width, height)
        image.save(path, quality=90) if fmt == "jpg" else image.save(path)
        paths.append(str(path))
    return ImageIndex([f"i{k}" for k in range(count)], [k % 4 for k in range(count)], list("abcd"), str(folder),
                      paths=paths)  # fmt: skip


def loader_rate(dataset, batch: int, device_step: DevicePreprocess | None = None) -> float:
    """Images per CPU-second of this process for one pass (NUM_WORKERS 0), optionally with the device step."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=0, collate_fn=getattr(dataset, "collate_fn", None))
    cpu, seen = time.process_time(), 0
    for item in loader:
        if device_step is not None:
            device_step(item, torch.device("cpu"))
        seen += len(item["index"])
    return seen / (time.process_time() - cpu)


def model_rate(student: str, size: int, batch: int, device: torch.device, steps: int) -> tuple[float, float | None]:
    """(img/s wall, mean GPU utilisation % or None) of forward + CE + backward + SGD step on random tensors."""
    import torch.nn.functional as F

    family = "cifar" if size <= 64 else "imagenet"
    model = build_student(student, 4, input_family=family).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 4, (batch,), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    utilisation = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
        if device.type == "cuda" and hasattr(torch.cuda, "utilization"):
            try:
                utilisation.append(float(torch.cuda.utilization(device)))
            except Exception:  # no NVML (pynvml) on this machine: utilisation unknown, not an error
                pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = steps * batch / (time.perf_counter() - start)
    return rate, (statistics.fmean(utilisation) if utilisation else None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224], help="DATASET.IMAGE_SIZE values")
    p.add_argument("--formats", nargs="+", default=["jpg", "png"], choices=["jpg", "png"])
    p.add_argument("--images", type=int, default=64, help="images per size and format")
    p.add_argument("--batch", type=int, default=32, help="loader and model batch size")
    p.add_argument("--rounds", type=int, default=3, help="alternating former / uint8 rounds (median reported)")
    p.add_argument("--student", default="resnet18", help="student for the model img/s (build_student name)")
    p.add_argument("--model-steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    workers = worker_count(-1)
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"device: {device}{name}; 1 torch thread; {os.cpu_count()} logical cores; "
          f"DATASET.NUM_WORKERS -1 -> {workers} workers here")  # fmt: skip
    print(f"{args.images} images per case, batch {args.batch}, rrc + flip, {args.rounds} alternating rounds (median)")
    print(f"{'size':>4} {'format':6} {'cache':5} | {'former':>8} {'uint8':>8} {'ratio':>6} | {'uint8+step':>10} "
          f"{'ratio':>6}   (img per CPU-second = per core)")  # fmt: skip
    on_device = DevicePreprocess(MEAN, STD)
    results: dict[tuple[int, str, bool], tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="makd_bench_data_") as tmp:
        for size in args.sizes:
            for fmt in args.formats:
                files = write_images(Path(tmp), fmt, args.images, size)
                for cached in (True, False):
                    index = cache_images(files, int(round(size * RESIZE_RATIO)), num_threads=1) if cached else files
                    former = FormerDataset(index, FormerTrainTransform(size))
                    new = AspectDataset(index, train_transform(image_size=size), None, 0, preprocess=on_device)
                    rows = []
                    for _ in range(args.rounds):
                        rows.append((loader_rate(former, args.batch), loader_rate(new, args.batch),
                                     loader_rate(new, args.batch, on_device)))  # fmt: skip
                    old, u8, step = results[size, fmt, cached] = tuple(statistics.median(r[k] for r in rows)
                                                                        for k in range(3))  # fmt: skip
                    print(f"{size:4d} {fmt:6} {'yes' if cached else 'no':5} | {old:8.0f} {u8:8.0f} {u8 / old:5.2f}x | "
                          f"{step:10.0f} {step / old:5.2f}x")  # fmt: skip
    # Without a GPU the device step runs on the CPU too: count it in what the loader side costs.
    column = 2 if device.type == "cpu" else 1
    for size in args.sizes:
        rate, utilisation = model_rate(args.student, size, args.batch, device, args.model_steps)
        util = f", GPU utilisation {utilisation:.0f}%" if utilisation is not None else ""
        print(f"{args.student} {size} px forward+backward+step: {rate:.1f} img/s on {device}{util}")
        for cached in (True, False):
            per_core = min(results[size, fmt, cached][column] for fmt in args.formats)
            supply = per_core * max(workers, 1)
            print(f"  uint8 loader{' + step' if column == 2 else ''}, {'cached' if cached else 'files '}, slowest "
                  f"format: {per_core:.0f} img/CPU-s x {max(workers, 1)} workers = {supply:.0f} img/s -> "
                  f"{'input-bound' if supply < rate else 'not input-bound'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
