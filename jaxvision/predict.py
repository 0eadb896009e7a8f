"""Classify image files with a trained workdir or a pretrained model.

    python -m jaxvision.predict --workdir /tmp/mnist_cnn digit.png more_digits/
    python -m jaxvision.predict --model resnet50 --pretrained [TAG] cat.jpg --top_k 3 --json
    jaxvision-predict ...   (the same, as an installed script)

Folders are searched recursively for image files.  Images go through the eval transform
the model was evaluated with (``jaxvision.data.transforms``): for a run on a streamed source
(image folder, ArrayRecord) the run's ``eval_transform``, for a pretrained model its data
config's (``model_cfg(name, pretrained=...)``: shorter side to ``size / crop_pct`` with its
interpolation, centre crop); images of a run on in-memory data (MNIST, CIFAR-sized) are
decoded to its input size (``jaxvision.data.folder.decode_image``).  They are normalised
with the run's or the weights' mean and std.  Class names
come from the workdir's ``classes.json`` (written by the trainer) or, for ImageNet-1k
weights, from ``jaxvision/imagenet1k_classes.txt``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

CLASSES_FILE = "classes.json"
_IMAGENET = os.path.join(os.path.dirname(__file__), "imagenet1k_classes.txt")


def imagenet_classes() -> list[str]:
    with open(_IMAGENET) as f:
        return [line.rstrip("\n") for line in f]


def image_paths(inputs) -> list[str]:
    """Files as given; folders expanded (recursively, sorted) to their image files.
    A path that does not exist, or a folder without images, is an error."""
    from jaxvision.data.folder import is_image
    out = []
    for p in inputs:
        if os.path.isdir(p):
            found = sorted(os.path.join(d, n) for d, _, names in os.walk(p) for n in names
                           if is_image(n))
            if not found:
                raise FileNotFoundError(f"folder {p} holds no image files")
            out += found
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"image file {p} does not exist")
    return out


class Predictor:
    """A model, its variables, its preprocessing and its class names."""

    def __init__(self, model, variables, names, size, channels, mean, std, transform=None):
        import jax
        self.model, self.variables, self.names = model, variables, list(names)
        self.size, self.channels = tuple(size), int(channels)
        self.transform = transform  # bytes -> uint8 (H, W, C); None: decode to ``size``
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self._apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False)))

    @classmethod
    def from_workdir(cls, workdir: str) -> "Predictor":
        from jaxvision import checkpoint as ckpt
        from jaxvision.registry import create_model, model_cfg
        cfg_path = os.path.join(workdir, "config.json")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"{workdir} is not a jaxvision workdir (no config.json)")
        with open(cfg_path) as f:
            config = json.load(f)
        variables, meta = ckpt.restore_variables(workdir)
        names = read_classes(workdir)
        n = int(meta.get("num_classes") or len(names))
        if len(names) != n:
            names = [str(i) for i in range(n)]
        mcfg = model_cfg(config["model"])
        ds = config.get("dataset", {})
        size = tuple(ds.get("image_size") or ()) or mcfg["input_size"][:2]
        channels = ds.get("channels") or mcfg["input_size"][2]
        kwargs = {k: v for k, v in (config.get("model_kwargs") or {}).items()}
        model = create_model(config["model"], num_classes=n, **kwargs)
        variables = {k: v for k, v in variables.items() if v}
        transform = None
        if ds.get("source") in ("folder", "array_record"):  # streamed: its eval transform
            from jaxvision.data.transforms import eval_transform
            transform = eval_transform(ds, config["model"], (*size, channels))
        return cls(model, variables, names, size, channels, ds.get("mean") or mcfg["mean"],
                   ds.get("std") or mcfg["std"], transform)

    @classmethod
    def from_pretrained(cls, name: str, pretrained=True) -> "Predictor":
        from jaxvision.registry import create_model, model_cfg
        cfg = model_cfg(name, pretrained=pretrained)
        model, variables = create_model(name, pretrained=pretrained)
        n = model.num_classes
        names = imagenet_classes() if n == 1000 else [str(i) for i in range(n)]
        from jaxvision.data.transforms import CenterCropEval
        (h, w, c) = cfg["input_size"]
        if h != w:
            raise ValueError(f"{name}'s weights take {h}x{w} inputs; the eval crop is square")
        transform = CenterCropEval(h, cfg.get("crop_pct", 0.875),
                                   cfg.get("interpolation", "bilinear"),
                                   cfg.get("crop_mode", "center"), c)
        return cls(model, variables, names, (h, w), c, cfg["mean"], cfg["std"], transform)

    def load(self, path: str) -> np.ndarray:
        """uint8 (H, W, C) as the model expects it."""
        if self.transform is None:
            from jaxvision.data.folder import decode_image
            return decode_image(path, self.channels, self.size)
        with open(path, "rb") as f:
            data = f.read()
        return self.transform(data, None, path).reshape(*self.size, self.channels)

    def __call__(self, paths, top_k: int = 5, batch: int = 32) -> list[dict]:
        images = [self.load(p) for p in paths]  # every file decodes before anything compiles
        out = []
        for i in range(0, len(images), batch):
            x = np.stack(images[i:i + batch]).astype(np.float32) / 255.0
            x = (x - self.mean) / self.std
            probs = np.asarray(self._apply(self.variables, x))
            for p, row in zip(paths[i:i + batch], probs):
                top = np.argsort(-row)[:top_k]
                out.append({"path": p, "top": [{"class": self.names[j], "index": int(j),
                                                "prob": float(row[j])} for j in top]})
        return out


def read_classes(workdir: str) -> list[str]:
    path = os.path.join(workdir, CLASSES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return list(json.load(f)["names"])


def class_names(ds_cfg, data) -> list[str]:
    """Names of a dataset's classes: folder names, tfds label names, digits for MNIST
    (IDX / bundled), else the label numbers."""
    n = data.num_classes
    source = getattr(data.train, "source", None)
    if getattr(source, "classes", None):
        return list(source.classes)
    if ds_cfg.source == "folder":
        from jaxvision.data.folder import class_names as folder_classes
        return folder_classes(ds_cfg.path)
    if ds_cfg.source == "tfds":
        try:
            import tensorflow_datasets as tfds
            names = tfds.builder(ds_cfg.name, data_dir=ds_cfg.data_dir or None
                                 ).info.features["label"].names
            if len(names) == n:
                return list(names)
        except Exception:  # names are a convenience: fall back to numbers
            pass
    return [str(i) for i in range(n)]


def write_classes(workdir: str, names):
    tmp = os.path.join(workdir, CLASSES_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"names": list(names)}, f, indent=1)
    os.replace(tmp, os.path.join(workdir, CLASSES_FILE))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxvision-predict", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a jaxvision training workdir (newest checkpoint)")
    src.add_argument("--model", help="a registered model name (with --pretrained)")
    p.add_argument("--pretrained", nargs="?", const="default", default=None,
                   help="weights for --model: timm's default tag, a tag, or a weights file")
    p.add_argument("--top_k", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    p.add_argument("images", nargs="+", help="image files or folders of them")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.top_k < 1:
        parser().error("--top_k must be at least 1")
    try:
        paths = image_paths(args.images)
        if args.workdir:
            if args.pretrained:
                parser().error("--pretrained goes with --model, not --workdir")
            pred = Predictor.from_workdir(args.workdir)
        else:
            if not args.pretrained:
                parser().error("--model needs --pretrained (a model without weights "
                               "predicts nothing useful)")
            value = True if args.pretrained == "default" else args.pretrained
            pred = Predictor.from_pretrained(args.model, value)
        results = pred(paths, args.top_k, args.batch)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
        print(f"jaxvision-predict: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            print(f"{r['path']}: " + ", ".join(f"{t['class']} ({t['prob']:.3f})"
                                               for t in r["top"]))
    return 0


def cli():
    sys.exit(main())


if __name__ == "__main__":
    cli()
