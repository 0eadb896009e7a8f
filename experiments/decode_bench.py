"""Per-image CPU cost of JPEG decoding, DCT-domain scaling, crop-aware decoding, resizing and
the whole host transforms, one thread, files held in memory (no disk I/O), all in one
process so the ratios compare like with like (the methods of a group take turns on every
file).

    PYTHONPATH=$PWD python experiments/decode_bench.py \\
        --out experiments/results/decoders_cpu.json

Files: ``--dir`` (any folder of JPEGs), else ``--images`` ImageNet-like files written by
``experiments/make_jpeg_folder.py`` into a temporary folder.  Every method runs over all
files ``--repeats`` times; the minimum over repeats of the mean per image is reported, in ms, with the ratio
to the reference of its group (Pillow for decoding and resizing; torchvision / timm for the
whole transforms).  Optional libraries (OpenCV, PyTurboJPEG) are measured when installed.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_jpeg_folder

from jaxvision.data import decode as dec
from jaxvision.data import transforms as tfm

try:
    import cv2
    cv2.setNumThreads(1)
except ImportError:
    cv2 = None
try:
    import turbojpeg
    _TJ = turbojpeg.TurboJPEG()
except Exception:  # not installed, or libturbojpeg missing
    turbojpeg = _TJ = None
import simplejpeg

from jaxvision.data.benchmark import cpu_model  # noqa: E402


def versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "pillow": Image.__version__, "simplejpeg": simplejpeg.__version__}
    if cv2 is not None:
        out["opencv"] = cv2.__version__
    if turbojpeg is not None:
        out["PyTurboJPEG"] = getattr(turbojpeg, "__version__", "?")
    try:
        import torchvision
        out["torchvision"] = torchvision.__version__
        import timm
        out["timm"] = timm.__version__
    except ImportError:
        pass
    return out


def load_files(args) -> list[bytes]:
    root = args.dir
    if not root:
        root = tempfile.mkdtemp(prefix="decode_bench_")
        make_jpeg_folder.make_folder(root, args.images, 10, seed=0)
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                   if f.lower().endswith((".jpeg", ".jpg")))[: args.images]
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


# ---------------------------------------------------------------------------------------
# The methods: each takes (data, job) where job holds the file's precomputed crop
# ---------------------------------------------------------------------------------------

def _pil_rgb(d):
    with Image.open(io.BytesIO(d)) as img:
        return np.asarray(img.convert("RGB"))


def _cv2_decode(d, flag=None):
    flag = cv2.IMREAD_COLOR_RGB if flag is None else flag
    return cv2.imdecode(np.frombuffer(d, np.uint8), flag)


def _pow2_factor(job):
    """The largest factor in {1, 2, 4, 8} keeping the crop >= the output (OpenCV's reduced
    modes and the power-of-2 libjpeg scales)."""
    f = 1
    while f < 8 and min(job["h"], job["w"]) / (2 * f) >= job["out"]:
        f *= 2
    return f


_CV2_REDUCED = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4",
                8: "IMREAD_REDUCED_COLOR_8"}


def decode_methods():
    m = {"pillow": lambda d, j: _pil_rgb(d),
         "simplejpeg": lambda d, j: simplejpeg.decode_jpeg(d)}
    if cv2 is not None:
        m["opencv"] = lambda d, j: _cv2_decode(d)
    if _TJ is not None:
        m["pyturbojpeg"] = lambda d, j: _TJ.decode(d, pixel_format=turbojpeg.TJPF_RGB)
    return m


def region_methods():
    """Decode what a random-resized crop at ``out`` needs (the crop sampled per file)."""
    def sj(d, j):
        ms = j["min_size"]
        kw = {} if ms is None else dict(min_height=ms[0], min_width=ms[1])
        return simplejpeg.decode_jpeg(d, **kw)

    def pil_draft(d, j):
        with Image.open(io.BytesIO(d)) as img:
            if j["min_size"] is not None:
                img.draft("RGB", (j["min_size"][1], j["min_size"][0]))
            return np.asarray(img.convert("RGB"))

    m = {"pillow_full": lambda d, j: _pil_rgb(d), "pillow_draft": pil_draft,
         "simplejpeg_full": lambda d, j: simplejpeg.decode_jpeg(d), "simplejpeg_dct": sj}
    if cv2 is not None:
        def cv_reduced(d, j):
            f = _pow2_factor(j)
            if f == 1:
                return _cv2_decode(d)
            return cv2.cvtColor(_cv2_decode(d, getattr(cv2, _CV2_REDUCED[f])),
                                cv2.COLOR_BGR2RGB)
        m["opencv_reduced"] = cv_reduced
    if _TJ is not None:
        def tj_crop(d, j):
            # lossless MCU-aligned crop of the region, then decode (and DCT-scale) it
            c = _TJ.crop(d, j["left"], j["top"], j["w"], j["h"])
            f = _pow2_factor(j)
            return _TJ.decode(c, pixel_format=turbojpeg.TJPF_RGB,
                              scaling_factor=None if f == 1 else (1, f))
        m["pyturbojpeg_crop_then_decode"] = tj_crop
    return m


def scale_methods():
    """simplejpeg at each M/8 DCT scale: what decoding smaller saves."""
    def at(m):
        def f(d, j):
            return simplejpeg.decode_jpeg(d, min_height=-(-j["height"] * m // 8),
                                          min_width=-(-j["width"] * m // 8))
        return f
    return {f"scale_{m}/8": at(m) for m in (8, 7, 6, 5, 4, 3, 2, 1)}


def resize_methods():
    """Resize the (already decoded) crop to out x out."""
    def pil(crop, j):
        return np.asarray(Image.fromarray(crop).resize((j["out"], j["out"]),
                                                       Image.Resampling.BILINEAR))
    # jaxvision's: OpenCV when enlarging both sides, Pillow otherwise
    m = {"pillow_bilinear": pil,
         "jaxvision_bilinear": lambda crop, j: dec.resize(crop, (j["out"], j["out"]))}
    if cv2 is not None:
        m["opencv_linear"] = lambda crop, j: cv2.resize(crop, (j["out"], j["out"]),
                                                        interpolation=cv2.INTER_LINEAR)
        m["opencv_area"] = lambda crop, j: cv2.resize(crop, (j["out"], j["out"]),
                                                      interpolation=cv2.INTER_AREA)
    return m


def transform_methods(out):
    import torchvision.transforms as T
    rrc = tfm.RandomResizedCrop(out, interpolation="bilinear")
    rrc_full = tfm.RandomResizedCrop(out, interpolation="bilinear", dct=False)
    rrc_area = tfm.RandomResizedCrop(out, interpolation="area")  # the default
    tv = T.Compose([T.RandomResizedCrop(out), T.RandomHorizontalFlip()])
    m = {"torchvision_rrc": lambda d, j: np.asarray(tv(Image.open(io.BytesIO(d)).convert("RGB"))),
         # the same crop of a file for both (its own generator)
         "jaxvision_rrc_bilinear": lambda d, j: rrc(d, np.random.default_rng(j["seed"])),
         "jaxvision_rrc_bilinear_no_dct": lambda d, j: rrc_full(d, np.random.default_rng(
             j["seed"])),
         "jaxvision_rrc_area": lambda d, j: rrc_area(d, np.random.default_rng(j["seed"]))}
    return m


def eval_methods():
    import timm.data
    import torchvision.transforms as T
    tv = T.Compose([T.Resize(256), T.CenterCrop(224)])  # torchvision's reference eval
    tv_ours = tfm.CenterCropEval(224, 0.875, "bilinear")
    ours = tfm.eval_transform(None, "resnet50")
    ref = timm.data.transforms_factory.transforms_imagenet_eval(
        224, crop_pct=ours.crop_pct, interpolation=ours.interpolation)
    steps = [t for t in ref.transforms if type(t).__name__ not in
             ("ToTensor", "MaybeToTensor", "Normalize")]

    def timm_eval(d, j):
        img = Image.open(io.BytesIO(d)).convert("RGB")
        for t in steps:
            img = t(img)
        return np.asarray(img)
    return {"timm_eval_resnet50": timm_eval, "jaxvision_eval_resnet50": lambda d, j: ours(d),
            "torchvision_eval_bilinear": lambda d, j: np.asarray(
                tv(Image.open(io.BytesIO(d)).convert("RGB"))),
            "jaxvision_eval_bilinear": lambda d, j: tv_ours(d)}


# ---------------------------------------------------------------------------------------

def time_group(methods, files, jobs, repeats, prepare=None):
    """{name: min over repeats of the mean ms per image}.  The methods take turns on every
    file, so load that drifts on a shared machine falls on all of them alike."""
    best = {k: float("inf") for k in methods}
    inputs = files if prepare is None else [prepare(d, j) for d, j in zip(files, jobs)]
    clock = time.perf_counter
    for _ in range(repeats):
        total = dict.fromkeys(methods, 0.0)
        for x, j in zip(inputs, jobs):
            for name, fn in methods.items():
                t0 = clock()
                fn(x, j)
                total[name] += clock() - t0
        for name, t in total.items():
            best[name] = min(best[name], t * 1e3 / len(inputs))
    return best


def make_jobs(files, out, seed):
    jobs = []
    for i, d in enumerate(files):
        height, width = dec.image_size(d)
        top, left, h, w = tfm.sample_rrc(np.random.default_rng([seed, i]), height, width)
        jobs.append(dict(top=top, left=left, h=h, w=w, out=out, height=height, width=width,
                         min_size=dec.dct_min_size(height, width, h, w, out, out),
                         seed=[seed, i]))
    return jobs


TABLE_START = "<!-- decoders_cpu table: experiments/decode_bench.py --docs -->"
TABLE_END = "<!-- end decoders_cpu table -->"
DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "data.md")


def render_table(result: dict) -> str:
    """The docs/data.md table of a results file."""
    f = result["files"]
    lines = [TABLE_START,
             f"{f['count']} files, mean {f['mean_width']:.0f}x{f['mean_height']:.0f} (WxH), "
             f"{f['mean_kib']:.0f} KiB; {result['cpu']}, one thread, {result['date'][:10]}; "
             f"`{result['command']}`.", "",
             "| group | method | ms / image | speed-up |", "|---|---|---:|---:|"]
    for group, entries in result["groups"].items():
        for name, e in entries.items():
            if not isinstance(e, dict):
                continue
            ratio = next(v for k, v in e.items() if k.startswith("ratio_to_"))
            ref = next(k for k in e if k.startswith("ratio_to_"))[len("ratio_to_"):]
            lines.append(f"| {group} | {name} | {e['ms']:.2f} | {ratio:.2f}x {ref} |")
        frac = entries.get("fraction_of_crops_dct_scaled")
        if frac is not None:
            lines.append(f"| {group} | (crops decoded DCT-scaled) | | {frac:.0%} |")
    lines.append(TABLE_END)
    return "\n".join(lines)


def write_docs(result: dict, path: str = DOCS):
    with open(path) as f:
        text = f.read()
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    with open(path, "w") as f:
        f.write(text[:start] + render_table(result) + text[end:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--outputs", default="224,128", help="crop output sizes to measure")
    p.add_argument("--out", default="experiments/results/decoders_cpu.json")
    p.add_argument("--docs", action="store_true",
                   help="only rewrite docs/data.md's table from the --out results file")
    args = p.parse_args(argv)
    if args.docs:
        with open(args.out) as f:
            write_docs(json.load(f))
        return
    files = load_files(args)
    sizes = np.array([dec.image_size(d) for d in files])
    result = {
        "command": "PYTHONPATH=$PWD python experiments/decode_bench.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "threads": 1, "versions": versions(),
        "files": {"count": len(files), "mean_height": float(sizes[:, 0].mean()),
                  "mean_width": float(sizes[:, 1].mean()),
                  "mean_kib": float(np.mean([len(d) for d in files]) / 1024),
                  "source": args.dir or "make_jpeg_folder.make_folder(seed=0)"},
        "unit": "ms per image (min over repeats of the mean), one thread",
        "groups": {},
    }

    def record(group, times, ref, extra=None):
        entry = {k: {"ms": round(v, 4), "ratio_to_" + ref: round(times[ref] / v, 3)}
                 for k, v in times.items()}
        if extra:
            entry.update(extra)
        result["groups"][group] = entry
        print(f"{group}:")
        for k, v in times.items():
            print(f"  {k:32s} {v:8.3f} ms   {times[ref] / v:6.2f}x {ref}")

    jobs224 = make_jobs(files, 224, 0)
    record("decode_full", time_group(decode_methods(), files, jobs224, args.repeats), "pillow")
    record("simplejpeg_dct_scale", time_group(scale_methods(), files, jobs224, args.repeats),
           "scale_8/8")
    for out in (int(s) for s in args.outputs.split(",")):
        jobs = make_jobs(files, out, 0)
        frac = float(np.mean([j["min_size"] is not None for j in jobs]))
        record(f"decode_for_rrc_{out}", time_group(region_methods(), files, jobs, args.repeats),
               "pillow_full", {"fraction_of_crops_dct_scaled": round(frac, 3)})

        def crop_of(d, j):
            return np.ascontiguousarray(
                simplejpeg.decode_jpeg(d)[j["top"]:j["top"] + j["h"], j["left"]:j["left"] + j["w"]])
        record(f"resize_crop_to_{out}", time_group(resize_methods(), files, jobs, args.repeats,
                                                   prepare=crop_of), "pillow_bilinear")
        record(f"train_transform_{out}",
               time_group(transform_methods(out), files, jobs, args.repeats), "torchvision_rrc")
    record("eval_transform", time_group(eval_methods(), files, jobs224, args.repeats),
           "timm_eval_resnet50")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    write_docs(result)
    print(f"wrote {args.out} and its table in docs/data.md")


if __name__ == "__main__":
    main()
