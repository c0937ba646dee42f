"""Object locator: where the object a task text names stands, read on an observed RGB frame.

Why. The contact-structured task head (:mod:`world_model.task_reward`) locates the named
object on the world model's 8 x 8 latent and grounds its colour through the text embedding:
5 cm off on held-out colours, four times the 1.3 cm a touch allows (docs/agents.md, E10). A
planner that acts in the real world sees a real frame at every replanning; this module
locates the object there, at pixel resolution, and grounds the colour word by what it means
rather than by which training sentences held it:

- **Colour grounding** (:func:`colour_of`): the colour word of the text is looked up in the
  XKCD colour survey (matplotlib's ``XKCD_COLORS``: 949 names people gave to colours), so
  "orange" means an RGB value even if no training text said "orange".
- **A colour-agnostic input**: the network sees the frame and, per pixel, how close its
  colour is to the named one (CIELAB distance, lightness half-weighted: shading changes it
  most), never the named colour itself; trained with random hue rotations of frame and
  colour together (:func:`rotate_hue`), it cannot tie "object" to the six training hues.
- **The place** (as the contact head's locator): soft-argmax over a heatmap at half the
  frame's resolution, a depth and a radius read at that place, back-projected with the
  camera intrinsics to the camera frame (x right, y down, z forward, metres).

Trained by ``python -m training.train_locator`` on simulator episodes, whose named object's
start is recovered by a simulator reset (:func:`dexac_env.sim.generate.named_object_start`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from world_model.json_config import JSONConfig
from world_model.keypoint_prior import image_fractions

# sRGB (D65) -> XYZ, IEC 61966-2-1; and the D65 white point. Written here (a dozen lines)
# rather than importing kornia or scikit-image for one conversion; a test checks it
# against scikit-image's rgb2lab.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) CIELAB (L in [0, 100]; a, b about [-128, 127])."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB_TO_XYZ.to(rgb).T / _WHITE.to(rgb)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                        200 * (f[..., 1] - f[..., 2])], -1)


def rotate_hue(rgb: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate (B, ..., 3) RGB about the grey axis by ``angle`` (B,) radians (greys stay
    grey, hues turn: the SVG ``feHueRotate`` idea, as an exact rotation), clipped to [0, 1]."""
    axis = torch.full((3,), 3 ** -0.5, dtype=rgb.dtype, device=rgb.device)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]],
                         dtype=rgb.dtype, device=rgb.device) * 3 ** -0.5
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    rotation = cos * torch.eye(3, dtype=rgb.dtype, device=rgb.device) + sin * cross \
        + (1 - cos) * torch.outer(axis, axis)  # (B, 3, 3), Rodrigues
    flat = rgb.reshape(rgb.shape[0], -1, 3)
    return (flat @ rotation.transpose(1, 2)).reshape(rgb.shape).clamp(0.0, 1.0)


@cache
def _colour_names() -> dict[str, tuple[float, float, float]]:
    from matplotlib.colors import XKCD_COLORS, to_rgb  # noqa: PLC0415

    return {name.removeprefix("xkcd:"): to_rgb(hex_) for name, hex_ in XKCD_COLORS.items()}


def colour_of(text: str) -> tuple[float, float, float] | None:
    """The RGB (0-1) of the first colour name in ``text`` (longest match: "light blue" over
    "blue"), from the XKCD colour survey; None when the text names no colour."""
    words = re.findall(r"[a-z]+", text.lower())
    names = _colour_names()
    for i in range(len(words)):
        for n in (3, 2, 1):
            phrase = " ".join(words[i:i + n])
            if len(words[i:i + n]) == n and phrase in names:
                return names[phrase]
    return None


# The fingers in the action's order (dexac_env.actions.FINGER_NAMES, restated here: world_model
# does not import dexac_env; a test checks the two agree), with a common synonym.
FINGER_WORDS = ("thumb", "index", "middle", "ring", "little")
_FINGER_SYNONYMS = {"pinky": "little", "pinkie": "little", "forefinger": "index"}


def hand_of(text: str) -> str | None:
    """The one hand a text names ("left" or "right"), or None when it names neither or both
    ("... together with both hands")."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    sides = [s for s in ("left", "right") if s in words]
    return sides[0] if len(sides) == 1 and "both" not in words else None


def fingertip_of(text: str) -> int | None:
    """The fingertip a text names, as an index into the ten fingertips (left thumb..little,
    then right thumb..little), from its side word ("left"/"right") and finger word; None when
    the text does not name both."""
    words = [_FINGER_SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", text.lower())]
    sides = [w for w in words if w in ("left", "right")]
    fingers = [w for w in words if w in FINGER_WORDS]
    if not sides or not fingers:
        return None
    return (0 if sides[0] == "left" else 5) + FINGER_WORDS.index(fingers[0])


@dataclass(frozen=True)
class LocatorConfig(JSONConfig):
    """image_size: square frames' side (pixels); camera: normalised intrinsics (fx / W,
    fy / H, cx / W, cy / H); width: channels of the first stage; colour_scale: CIELAB distance
    at which the similarity channel falls to exp(-1/2); heatmap_weight: weight of the place
    heatmap's cross-entropy (the soft-argmax centre's error in metres has weight 1 x
    ``locate_weight``); hue_augment: train with random hue rotations; redraw_fraction: the
    share of training frames passed through ``redraw`` (the world model's tokenizer, encode then
    decode) after their hue rotation, so the locator also learns to read the model's own
    drawings (the imagined frames a planner scores), colour distortions included."""

    image_size: int = 64
    camera: tuple[float, float, float, float] = (0.714, 0.714, 0.5, 0.5)
    width: int = 32
    colour_scale: float = 25.0
    locate_weight: float = 10.0
    radius_weight: float = 10.0
    heatmap_weight: float = 1.0
    hue_augment: bool = True
    redraw_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.redraw_fraction <= 1.0:
            raise ValueError(f"redraw_fraction must be in [0, 1], got {self.redraw_fraction}")


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
                         nn.GroupNorm(8, cout), nn.SiLU())


class ObjectLocator(nn.Module):
    """Frames and named colours -> the named object's centre (camera frame) and radius."""

    def __init__(self, config: LocatorConfig) -> None:
        super().__init__()
        self.config = config
        # frames (B, H, W, 3) float [0, 1] -> the world model's drawing of them, same form;
        # training only (``redraw_fraction``), set by the trainer, never saved
        self.redraw: Callable[[torch.Tensor], torch.Tensor] | None = None
        w = config.width
        self.stem = _block(5, w // 2)  # full resolution: one layer reads the pixels
        self.down1 = nn.Sequential(_block(w // 2, w, 2), _block(w, w))  # 1/2
        self.down2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w, dilation=2),
                                   _block(2 * w, 2 * w, dilation=4))  # 1/4: scene context
        self.fuse = _block(3 * w, w)  # 1/2: upsampled context + the 1/2 features
        self.out = nn.Conv2d(w, 3, 1)  # place logit, depth, radius

    def inputs(self, frames: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        """frames (B, H, W, 3) in [0, 1] and colours (B, 3) RGB -> (B, 5, H, W): the frame,
        the similarity to the named colour and the CIELAB distance / 100."""
        lab, query = rgb_to_lab(frames), rgb_to_lab(colours)[:, None, None]  # (B, H, W, 3)
        weight = torch.tensor([0.5, 1.0, 1.0], dtype=lab.dtype, device=lab.device)
        distance = torch.linalg.vector_norm((lab - query) * weight, dim=-1)  # (B, H, W)
        similarity = torch.exp(-0.5 * (distance / self.config.colour_scale) ** 2)
        return torch.cat([frames.permute(0, 3, 1, 2), similarity[:, None],
                          distance[:, None] / 100.0], 1)

    def forward(self, frames: torch.Tensor, colours: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames (B, H, W, 3) uint8 or float in [0, 1]; colours (B, 3) RGB in [0, 1].
        Returns centre (B, 3) in the camera frame (m), radius (B,) (m), place logits (B, S*S)
        over the S = H / 2 grid."""
        size = self.config.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (size, size, 3) \
                or tuple(colours.shape) != (frames.shape[0], 3):
            raise ValueError(f"frames must be (B, {size}, {size}, 3) and colours (B, 3), got "
                             f"{tuple(frames.shape)} and {tuple(colours.shape)}")
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        # 1. colour-agnostic input and the encoder
        x = self.stem(self.inputs(frames.float(), colours.float()))  # (B, w/2, H, W)
        half = self.down1(x)  # (B, w, H/2, W/2)
        context = self.down2(half)  # (B, 2w, H/4, W/4)
        # 2. context back to half resolution, fused with the half-resolution features
        up = F.interpolate(context, size=half.shape[-2:], mode="bilinear", align_corners=False)
        out = self.out(self.fuse(torch.cat([half, up], 1)))  # (B, 3, S, S)
        # 3. soft-argmax place, depth and radius read there, back-projected
        s = out.shape[-1]
        logits = out[:, 0].flatten(1)  # (B, S*S)
        weights = torch.softmax(logits, dim=1).view(-1, s, s)
        centres = (torch.arange(s, device=out.device, dtype=out.dtype) + 0.5) / s
        u = (weights.sum(1) * centres).sum(1)  # columns -> x fraction
        v = (weights.sum(2) * centres).sum(1)  # rows -> y fraction
        depth = 0.05 + F.softplus((weights * out[:, 1]).sum((1, 2)) + 0.5)  # ~1 m at init
        radius = 0.005 + F.softplus((weights * out[:, 2]).sum((1, 2)) - 4.0)
        fx, fy, cx, cy = self.config.camera
        centre = torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)
        return centre, radius, logits

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: ``frames`` (B, H, W, 3) uint8, ``colours`` (B, 3), ``centre`` (B, 3) the
        named object's centre in the frame's camera frame, ``radius`` (B,)."""
        cfg = self.config
        frames, colours = batch["frames"].float() / 255.0, batch["colours"].float()
        if cfg.hue_augment:  # the same turn for the frame and its named colour
            angle = torch.rand(frames.shape[0], device=frames.device) * 2 * math.pi
            frames, colours = rotate_hue(frames, angle), rotate_hue(colours[:, None], angle)[:, 0]
        if cfg.redraw_fraction > 0:
            if self.redraw is None:
                raise RuntimeError("redraw_fraction > 0 needs locator.redraw (the tokenizer)")
            chosen = torch.rand(frames.shape[0], device=frames.device) < cfg.redraw_fraction
            if chosen.any():
                with torch.no_grad():
                    frames = frames.clone()
                    frames[chosen] = self.redraw(frames[chosen])
        centre, radius, logits = self(frames, colours)
        error = torch.linalg.vector_norm(centre - batch["centre"], dim=-1)  # (B,) m
        radius_error = (radius - batch["radius"]).abs()
        # the heatmap's target: the cell where the true centre is imaged
        u, v = image_fractions(batch["centre"], cfg.camera).clamp(0, 1 - 1e-6).unbind(-1)
        s = int(math.isqrt(logits.shape[1]))
        cell = (v * s).long() * s + (u * s).long()
        heat = F.cross_entropy(logits, cell)
        loss = (cfg.locate_weight * error.mean() + cfg.radius_weight * radius_error.mean()
                + cfg.heatmap_weight * heat)
        return loss, {"locate_cm": 100 * error.mean().item(),
                      "radius_cm": 100 * radius_error.mean().item(), "heatmap_ce": heat.item()}

    @torch.no_grad()
    def locate_text(self, frames: torch.Tensor, texts: list[str]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, H, W, 3) uint8 and their task texts -> centre (B, 3) camera frame (m)
        and radius (B,) (m). Raises ``ValueError`` for a text that names no colour."""
        colours = []
        for text in texts:
            rgb = colour_of(text)
            if rgb is None:
                raise ValueError(f"the locator needs a colour name in the task text; {text!r} "
                                 "has none")
            colours.append(rgb)
        centre, radius, _ = self(frames, torch.tensor(colours, device=frames.device))
        return centre, radius


def table_up(centres: torch.Tensor) -> torch.Tensor:
    """(N, 3) object centres in camera frames (y down) -> (3,) the unit normal of the plane
    they rest on, pointing up (against the image's y): the table's up, fitted to the data."""
    if centres.ndim != 2 or centres.shape[0] < 3 or centres.shape[1] != 3:
        raise ValueError(f"need (N >= 3, 3) centres, got {tuple(centres.shape)}")
    centred = centres.double() - centres.double().mean(0)
    normal = torch.linalg.svd(centred, full_matrices=False).Vh[2]  # least-variance direction
    return (normal if normal[1] < 0 else -normal).float()


def save_locator(locator: ObjectLocator, path: str | Path, metadata: dict | None = None) -> Path:
    """Weights (safetensors) with the config and ``metadata`` (JSON) in the header."""
    from safetensors.torch import save_file  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": "dexac-object-locator", "config": json.dumps(asdict(locator.config)),
              "metadata": json.dumps(metadata or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in locator.state_dict().items()}
    save_file(state, str(path), metadata=header)
    return path


def load_locator(path: str | Path, device: str | torch.device = "cpu") -> ObjectLocator:
    """A locator saved by :func:`save_locator`, in eval mode; ``.table_up`` is the table's up
    normal its training recorded (None if it recorded none)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no object locator at {path}")
    from safetensors import safe_open  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    with safe_open(str(path), "pt") as f:
        header = f.metadata() or {}
    if header.get("format") != "dexac-object-locator":
        raise ValueError(f"{path} is not an object locator (format {header.get('format')!r})")
    locator = ObjectLocator(LocatorConfig.from_dict(json.loads(header["config"])))
    locator.load_state_dict(load_file(str(path), device="cpu"))
    up = json.loads(header.get("metadata", "{}")).get("table_up")
    locator.table_up = None if up is None else torch.tensor(up)  # (3,), see table_up
    return locator.to(device).eval()
