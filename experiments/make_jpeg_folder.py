"""Write an ImageNet-like folder of JPEG photographs, for the loader's tests and benchmarks.

    PYTHONPATH=$PWD python experiments/make_jpeg_folder.py /tmp/jpegs --images 2000 --classes 10
    PYTHONPATH=$PWD python experiments/make_jpeg_folder.py /tmp/jpegs --images 2000 --classes 10 \\
        --val-images 500 --gray-fraction 0.01 --cmyk-fraction 0.005

Layout: ``DIR/<class>/<class>_<i>.JPEG`` (or ``DIR/train/...`` and ``DIR/val/...`` with
``--val-images``), classes ``c000, c001, ...``, JPEG quality 90 (4:2:0), as ImageNet's files.

Content: real photographs shipped inside installed packages, so nothing is downloaded and
nothing is noise (noise compresses and decodes unlike photographs, so it would distort
every decode timing): scikit-image's bundled colour photographs (astronaut, chelsea,
coffee, rocket, Hubble deep field, retina, immunohistochemistry, motorcycle) and
scikit-learn's two sample images (china, flower).  Class ``k`` is drawn from photograph
``k mod 10``, so classes are learnable; every file is a random crop of it (40-100% of its
side, at the file's aspect ratio, never smaller than the file where the photograph
allows), resized with Lanczos to the file's size and flipped at
random.  ``--gray-fraction`` / ``--cmyk-fraction`` of the files are saved as grayscale /
CMYK JPEGs, as a few ImageNet files are.

Sizes follow ImageNet-1k's training set, whose files are mostly 500x375 / 375x500 or
smaller, about 400x350 on average (and an occasional large one): the shorter side is
log-normal with median 310 px and sigma 0.3 (clipped to [64, 1200]), the aspect ratio
(long / short) log-normal with median 4/3 and sigma 0.12 (clipped to [1, 3]), landscape
three times in four.  That gives means of about 400 x 350 (W x H); the script prints the
means it wrote.  The files average about 40 KiB, against about 110 KiB for ImageNet's: these
photographs are smoother than ImageNet's camera files (less sensor noise and fine texture),
so their entropy decoding is cheaper and absolute decode times are lower than on ImageNet;
ratios between decoders and pipelines on the same files are what they are for.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import os

import numpy as np
from PIL import Image

# (package, file) of every photograph, read straight from the installed package's data
# folder (what skimage.data / sklearn.datasets.load_sample_images return, without importing
# either package, which costs seconds)
PHOTOS = (("skimage", "data/astronaut.png"), ("skimage", "data/chelsea.png"),
          ("skimage", "data/coffee.png"), ("skimage", "data/rocket.jpg"),
          ("skimage", "data/hubble_deep_field.jpg"), ("skimage", "data/retina.jpg"),
          ("skimage", "data/ihc.png"), ("skimage", "data/motorcycle_left.png"),
          ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"))


@functools.lru_cache(maxsize=None)
def photograph(index: int) -> np.ndarray:
    """Photograph ``index mod 10`` as uint8 (H, W, 3) (no download)."""
    package, rel = PHOTOS[index % len(PHOTOS)]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not installed: pip install "
                           f"{'scikit-image' if package == 'skimage' else 'scikit-learn'}")
    path = os.path.join(spec.submodule_search_locations[0], rel)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def sample_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of one ImageNet-like file (see the module docstring)."""
    short = float(np.clip(310 * np.exp(0.3 * rng.standard_normal()), 64, 1200))
    aspect = float(np.clip(4 / 3 * np.exp(0.12 * rng.standard_normal()), 1.0, 3.0))
    long = short * aspect
    if rng.random() < 0.75:
        return int(round(short)), int(round(long))
    return int(round(long)), int(round(short))


def render(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random crop of ``photo`` at ``size``'s aspect ratio, resized to ``size`` (H, W),
    flipped with probability 1/2."""
    ph, pw = photo.shape[:2]
    h, w = size
    aspect = w / h
    full_w = min(pw, ph * aspect)  # the widest crop of this aspect
    # no upscaling where the photograph is large enough: it would blur away the detail
    # that sets a JPEG's size and entropy-decoding time
    frac = rng.uniform(min(1.0, max(0.4, w / full_w)), 1.0)
    cw = full_w * frac
    ch = cw / aspect
    top = rng.uniform(0, max(0.0, ph - ch))
    left = rng.uniform(0, max(0.0, pw - cw))
    img = Image.fromarray(photo).resize((w, h), Image.Resampling.LANCZOS,
                                        box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def encode(img: Image.Image, mode: str = "RGB", quality: int = 90) -> bytes:
    """JPEG bytes of ``img`` stored as ``mode`` ('RGB', 'L' or 'CMYK')."""
    buf = io.BytesIO()
    img.convert(mode).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photo_jpeg(index: int = 0, size: tuple[int, int] = (120, 160), seed: int = 0,
               mode: str = "RGB", quality: int = 90) -> bytes:
    """One small JPEG of photograph ``index`` (for tests)."""
    rng = np.random.default_rng(seed)
    return encode(render(photograph(index), size, rng), mode, quality)


def make_folder(root: str, images: int, classes: int, seed: int = 0, quality: int = 90,
                gray_fraction: float = 0.0, cmyk_fraction: float = 0.0,
                val_images: int = 0) -> dict:
    """Write the folder; returns counts and mean sizes."""
    if images < classes or classes < 1:
        raise ValueError(f"need at least one image per class: --images {images}, "
                         f"--classes {classes}")
    if not 0 <= gray_fraction + cmyk_fraction <= 1:
        raise ValueError("--gray-fraction + --cmyk-fraction must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    splits = [("train", images)] + ([("val", val_images)] if val_images else [])
    stats = {"files": 0, "gray": 0, "cmyk": 0, "heights": [], "widths": [], "bytes": 0}
    for split, n in splits:
        base = os.path.join(root, split) if val_images else root
        for i in range(n):
            k = i % classes
            name = f"c{k:03d}"
            folder = os.path.join(base, name)
            os.makedirs(folder, exist_ok=True)
            h, w = sample_size(rng)
            img = render(photograph(k), (h, w), rng)
            u = rng.random()
            mode = "L" if u < gray_fraction else (
                "CMYK" if u < gray_fraction + cmyk_fraction else "RGB")
            data = encode(img, mode, quality)
            with open(os.path.join(folder, f"{name}_{split}_{i:07d}.JPEG"), "wb") as f:
                f.write(data)
            stats["files"] += 1
            stats["gray"] += mode == "L"
            stats["cmyk"] += mode == "CMYK"
            stats["heights"].append(h)
            stats["widths"].append(w)
            stats["bytes"] += len(data)
    return {"files": stats["files"], "gray": stats["gray"], "cmyk": stats["cmyk"],
            "mean_height": float(np.mean(stats["heights"])),
            "mean_width": float(np.mean(stats["widths"])),
            "mean_kib": stats["bytes"] / 1024 / stats["files"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("--images", type=int, required=True, help="training files in all")
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--val-images", type=int, default=0,
                   help=">0: also write DIR/val (and put the training files in DIR/train)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--gray-fraction", type=float, default=0.0)
    p.add_argument("--cmyk-fraction", type=float, default=0.0)
    a = p.parse_args(argv)
    s = make_folder(a.dir, a.images, a.classes, a.seed, a.quality, a.gray_fraction,
                    a.cmyk_fraction, a.val_images)
    print(f"wrote {s['files']} JPEGs ({s['gray']} grayscale, {s['cmyk']} CMYK) to {a.dir}: "
          f"mean {s['mean_width']:.0f}x{s['mean_height']:.0f} (WxH), {s['mean_kib']:.0f} KiB")


if __name__ == "__main__":
    main()
