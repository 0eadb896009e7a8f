"""Decoding encoded images to uint8 arrays, for the host input pipeline.

JPEG (almost all of ImageNet) goes through libjpeg-turbo by way of ``simplejpeg``, which can
scale in the DCT domain while decoding: asked for an image at least ``min_size`` large, it
decodes at the smallest of libjpeg-turbo's M/8 scales that keeps it so, doing a fraction of
the inverse-DCT and colour-conversion work (``experiments/decode_bench.py`` measures it;
``experiments/results/decoders_cpu.json``).  Every other format, and the JPEGs libjpeg-turbo
cannot hand back as RGB directly (CMYK / YCCK), go through Pillow.

Pixel formats are made uniform (the same rules as the image-folder source):

* grayscale (``L``, ``1``, 16-bit) is replicated to three channels when three are asked
  for; colour is reduced to one channel with Pillow's ITU-R 601-2 luma;
* transparency (``RGBA``, ``LA``, palette images with a transparent entry) is composited
  onto black, i.e. colour times alpha;
* ``CMYK`` (also CMYK JPEGs), ``YCbCr``, ``RGBX`` go through Pillow's conversion to RGB;
* 16-bit and 32-bit integer images are scaled to 8 bits by ``round(v / 257)``; values
  outside [0, 65535] are an error; 32-bit float images are refused;
* EXIF orientation is not applied (as torchvision's ``ImageFolder`` and timm).

A file that cannot be decoded (truncated, not an image, an unaccepted format) raises
:class:`~jaxvision.data.sources.DataError` naming the file (``path=``) and the reason.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from jaxvision.data.sources import DataError

try:  # a hard dependency; the fallback keeps the module importable without it
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None
try:  # bilinear enlargement only (see resize); Pillow does everything without it
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

# ``dataset.decoder``: the library that decodes JPEGs (other formats always go to Pillow),
# with the package each needs and how to install it.
DECODERS = {
    "libjpeg-turbo": ("simplejpeg", "pip install simplejpeg (a dependency of jaxvision: "
                                    "reinstall jaxvision to get it back)"),
    "pillow": ("PIL", "pip install pillow"),
}


def check_decoder(name: str) -> str:
    """``name`` if it is a known decoder whose library is installed; otherwise a clear
    error naming the choices or what to install."""
    if name not in DECODERS:
        raise ValueError(f"dataset.decoder must be one of {sorted(DECODERS)}, got {name!r}")
    if name == "libjpeg-turbo" and simplejpeg is None:
        raise DataError(f"dataset.decoder='libjpeg-turbo' needs the simplejpeg package, which "
                        f"is not installed: {DECODERS[name][1]}; or set "
                        f"dataset.decoder='pillow'")
    return name


# Pillow format names that are decoded (the JPEG opener also yields the multi-picture 'MPO'
# files many cameras write).  Content of any other format is refused, since some Pillow
# plugins hand files to external programs (EPS to Ghostscript).
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    # OpenCV's INTER_AREA when shrinking (antialiased by pixel-area averaging, as FFCV
    # trains), bilinear when enlarging: about twice as fast as Pillow's bilinear filter,
    # within a level or two of it (experiments/decode_bench.py); a training-only choice
    "area": None,
}

_JPEG_SOI = b"\xff\xd8\xff"
_TURBO_COLORSPACES = ("YCbCr", "Gray", "RGB")  # decoded by simplejpeg; the rest by Pillow


class FileFault(Exception):
    """A file that cannot be decoded; becomes a DataError naming the file (or a skip)."""


# ---------------------------------------------------------------------------------------
# Pillow modes -> 8-bit L / RGB
# ---------------------------------------------------------------------------------------

def composite_on_black(arr: np.ndarray) -> np.ndarray:
    """(H, W, C+1) colour + alpha -> (H, W, C) colour * alpha, rounded."""
    colour = arr[..., :-1].astype(np.uint32)
    alpha = arr[..., -1:].astype(np.uint32)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def to_8bit(img: Image.Image) -> Image.Image:
    """Any accepted Pillow mode -> an 8-bit 'L' or 'RGB' image (see the module docstring).

    Black is the zero the network sees for padding, and compositing onto it is the one
    choice that does not depend on whatever colour an editor left under fully transparent
    pixels (dropping alpha would expose exactly that).
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "F":
        raise FileFault("32-bit float pixels (mode 'F') have no fixed range to map to "
                        "8 bits; save the image as 8- or 16-bit")
    if mode == "I" or mode.startswith("I;16"):
        a = np.asarray(img)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise FileFault(f"{mode!r} pixels span [{a.min()}, {a.max()}], outside the "
                            f"16-bit range [0, 65535] that is scaled to 8 bits")
        return Image.fromarray(np.rint(a.astype(np.float32) / 257.0).astype(np.uint8), "L")
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        if mode == "PA" or "transparency" in img.info:
            img, mode = img.convert("RGBA"), "RGBA"
        else:
            return img.convert("RGB")
    if mode in ("LA", "La", "RGBA", "RGBa"):
        a = np.asarray(img)
        # 'La'/'RGBa' are stored premultiplied, which is already compositing onto black
        colour = composite_on_black(a) if mode[-1] == "A" else a[..., :-1]
        colour = np.ascontiguousarray(colour[..., 0] if mode[0] == "L" else colour)
        return Image.fromarray(colour, mode[:-1])
    try:
        return img.convert("RGB")  # CMYK, YCbCr, RGBX, ...
    except (ValueError, OSError) as e:
        raise FileFault(f"image mode {mode!r} cannot be converted to RGB ({e})") from e


def fault_reason(e: BaseException) -> str:
    if isinstance(e, Image.UnidentifiedImageError):
        return "not an image in an accepted format (" + ", ".join(PIL_FORMATS) + ")"
    msg = str(e) or type(e).__name__
    return f"{type(e).__name__}: {msg}"


def _channels(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif channels == 1 and arr.shape[-1] == 3:
        arr = np.asarray(Image.fromarray(arr, "RGB").convert("L"))[..., None]
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------

def is_jpeg(data: bytes) -> bool:
    return bytes(data[:3]) == _JPEG_SOI


def _as_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    if isinstance(data, np.ndarray) and data.dtype == np.uint8:
        return data.tobytes()
    raise TypeError(f"encoded image must be bytes, got {type(data).__name__}")


def _jpeg_header(data: bytes):
    """(height, width, colorspace) of a JPEG, or None when libjpeg-turbo cannot read it."""
    if simplejpeg is None or not is_jpeg(data):
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return h, w, colorspace


def image_size(data: bytes, path: str = "") -> tuple[int, int]:
    """The stored (height, width) of an encoded image, from its header alone."""
    data = _as_bytes(data)
    header = _jpeg_header(data)
    if header is not None:
        return header[0], header[1]
    try:
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
            w, h = img.size
    except Exception as e:
        raise DataError(f"cannot decode image file {path or '<bytes>'}: {fault_reason(e)}") from e
    return h, w


def _decode_pil(data: bytes, channels: int, min_size) -> np.ndarray:
    with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
        if min_size is not None and img.format in ("JPEG", "MPO"):
            # Pillow's draft mode is the same DCT-domain scaling, for the JPEGs (CMYK)
            # that take this path; it keeps both sides >= the requested size.
            img.draft(img.mode, (min_size[1], min_size[0]))
        img.load()
        img = to_8bit(img)
        if channels == 1 and img.mode == "RGB":
            img = img.convert("L")
        return _channels(np.asarray(img, dtype=np.uint8), channels)


def decode_raw(data: bytes, channels: int = 3, min_size: tuple[int, int] | None = None,
               decoder: str = "libjpeg-turbo") -> np.ndarray:
    """:func:`decode` raising :class:`FileFault` (no path) for a faulty file."""
    try:
        header = _jpeg_header(data) if decoder == "libjpeg-turbo" else None
        if header is not None and header[2] in _TURBO_COLORSPACES:
            kw = {}
            if min_size is not None:
                kw = dict(min_height=int(min_size[0]), min_width=int(min_size[1]))
            gray = header[2] == "Gray" or channels == 1
            try:
                arr = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB",
                                             strict=True, **kw)
                return _channels(arr, channels)
            except ValueError:
                # libjpeg-turbo's warnings are errors in strict mode; a few real files
                # (extraneous bytes before a marker, ...) draw one yet decode fine, as
                # Pillow shows: it has the last word (and raises for a truncated file)
                pass
        return _decode_pil(data, channels, min_size)
    except FileFault:
        raise
    except Exception as e:  # libjpeg-turbo and Pillow raise many types on corrupt data
        raise FileFault(fault_reason(e)) from e


def decode(data: bytes, channels: int = 3, min_size: tuple[int, int] | None = None,
           path: str = "", decoder: str = "libjpeg-turbo") -> np.ndarray:
    """Decode an encoded image to uint8 ``(H, W, channels)`` (``channels`` 1 or 3).

    Args:
      data: the encoded file's bytes.
      channels: 3 (RGB) or 1 (luma).
      min_size: ``(min_h, min_w)``: a JPEG may be decoded downscaled in the DCT domain to
        any of libjpeg-turbo's M/8 scales whose result is at least this large (each side).
        ``None``: full size.  The result covers the whole image either way.
      path: named in the error message.
      decoder: ``'libjpeg-turbo'`` (simplejpeg) or ``'pillow'`` for JPEGs (``DECODERS``).

    Raises:
      DataError: the data cannot be decoded; the message names ``path`` and the reason.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    try:
        return decode_raw(_as_bytes(data), channels, min_size, decoder)
    except FileFault as e:
        raise DataError(f"cannot decode image file {path or '<bytes>'}: {e}") from e


def dct_min_size(height: int, width: int, crop_h: float, crop_w: float,
                 out_h: int, out_w: int, factor: float = 2.0) -> tuple[int, int] | None:
    """The ``min_size`` for :func:`decode` when a ``crop_h x crop_w`` region of a
    ``height x width`` image is resized to ``out_h x out_w``: the decoded image may shrink
    by as much as keeps the region at least the output size, but only when the region is
    at least ``factor`` times the output (below that the saving does not pay for the
    extra resampling step).  ``None``: decode at full size."""
    need = max(out_h / crop_h, out_w / crop_w)  # the smallest scale keeping the output sharp
    if need * factor > 1.0:
        return None
    return max(1, math.ceil(height * need)), max(1, math.ceil(width * need))


# ---------------------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------------------

def single_threaded():
    """Keep OpenCV to one thread in this process.  Call it once in each loader worker
    process: the loader already runs one process per core, and OpenCV's own thread pool
    (one thread per core by default) would oversubscribe them.  Not done at import, which
    would change the importing program's OpenCV settings."""
    if cv2 is not None:
        cv2.setNumThreads(1)


def resize(img: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear",
           box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Resize uint8 ``(H, W, C)`` to ``size=(h, w)`` as Pillow does (antialiased when
    shrinking, as torchvision and timm resize PIL images), optionally from the sub-pixel
    region ``box=(left, top, right, bottom)`` only.

    A bilinear resize that enlarges both sides goes through OpenCV instead: without
    shrinking, Pillow's bilinear filter is plain bilinear interpolation at the same pixel
    centres, which OpenCV computes several times faster (equal to within rounding,
    ``experiments/decode_bench.py``).  Shrinking stays with Pillow: OpenCV's bilinear does
    not antialias.
    """
    out_h, out_w = size
    c = img.shape[-1]
    if box is None and img.shape[:2] == (out_h, out_w):
        return img
    if interpolation == "area":
        return _resize_area(img, size, box)
    if (cv2 is not None and box is None and interpolation == "bilinear"
            and out_h >= img.shape[0] and out_w >= img.shape[1]):
        out = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        return out[..., None] if out.ndim == 2 else out
    pil = Image.fromarray(img[..., 0] if c == 1 else img, "L" if c == 1 else "RGB")
    out = np.asarray(pil.resize((out_w, out_h), INTERPOLATIONS[interpolation], box=box))
    return out[..., None] if c == 1 else out


def _resize_area(img, size, box):
    if cv2 is None:
        raise ImportError("interpolation 'area' needs OpenCV: pip install opencv-python-headless")
    out_h, out_w = size
    if box is not None:  # whole pixels: a sub-pixel shift is immaterial to a training crop
        left, top, right, bottom = (round(v) for v in box)
        img = img[max(top, 0):max(bottom, top + 1), max(left, 0):max(right, left + 1)]
    shrink = out_h < img.shape[0] or out_w < img.shape[1]
    out = cv2.resize(np.ascontiguousarray(img), (out_w, out_h),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out
