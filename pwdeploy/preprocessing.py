"""The exact preprocessing a model expects, recorded with every run and bundle (numpy + Pillow only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``size`` (H, W), scale to [0, 1], normalise per channel; input layout NCHW float32.

    With ``resize_shorter`` the image is first resized so its shorter side has that length (aspect ratio
    kept), then centre-cropped to ``size``: torchvision's ``Resize(n)`` + ``CenterCrop(size)``.
    """

    size: tuple[int, int]
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    resize: str = "bilinear"
    resize_shorter: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            size=tuple(d["size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            channel_order=d.get("channel_order", "RGB"),
            layout=d.get("layout", "NCHW"),
            resize=d.get("resize", "bilinear"),
            resize_shorter=d.get("resize_shorter"),
            extra=dict(d.get("extra", {})),
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (len(self.mean), *self.size)

    def normalize(self, hwc: np.ndarray) -> np.ndarray:
        """uint8 or [0,1] float HWC array of the right size -> float32 CHW normalised array."""
        x = hwc.astype(np.float32)
        if hwc.dtype == np.uint8:
            x /= 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def apply_pil(self, image) -> np.ndarray:
        """A PIL image of any size -> float32 CHW array, exactly as training and the device see it."""
        return self.normalize(self.resize_pil(image))

    def resize_pil(self, image) -> np.ndarray:
        """The geometric part of ``apply_pil``: a PIL image -> uint8 HWC array of ``size`` (what the decoded-image
        cache stores; ``normalize`` of it is ``apply_pil``)."""
        image = image.convert("RGB")
        h, w = self.size
        if self.resize_shorter:
            # torchvision's rounding: the shorter side gets exactly n, the longer int(n * long / short)
            iw, ih = image.size
            n = int(self.resize_shorter)
            rw, rh = (n, int(n * ih / iw)) if iw <= ih else (int(n * iw / ih), n)
            if (rw, rh) != (iw, ih):
                image = image.resize((rw, rh), Image.BILINEAR)
            left, top = int(round((rw - w) / 2.0)), int(round((rh - h) / 2.0))
            image = image.crop((left, top, left + w, top + h))
        elif image.size != (w, h):
            image = image.resize((w, h), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
