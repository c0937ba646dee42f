"""An SB3 features extractor for the agents' ``{"image", "proprio"}`` observations."""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class ImageProprioExtractor(BaseFeaturesExtractor):
    """A small CNN on the (3, H, W) image (SB3 has already scaled it to [0, 1]) and an MLP on
    the proprio vector, concatenated: ``features_dim = image_dim + proprio_dim``.

    Sized for 64 px frames on a CPU: four stride-2 convolutions (64 -> 4 px) keep the
    spatial layout NatureCNN's 8x8 stride-4 first layer would blur at this size.
    """

    def __init__(self, observation_space: spaces.Dict, image_dim: int = 128,
                 proprio_dim: int = 64, width: int = 32):
        if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != {
            "image", "proprio"}:
            raise ValueError(f"expected a Dict(image, proprio) space, got {observation_space}")
        super().__init__(observation_space, features_dim=image_dim + proprio_dim)
        channels, height, width_px = observation_space["image"].shape
        layers, c_in = [], channels
        for c_out in (width, width, 2 * width, 2 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c_out
        self.cnn = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, channels, height, width_px)).shape[1]
        self.image_head = nn.Sequential(nn.Linear(flat, image_dim), nn.SiLU())
        proprio_in = observation_space["proprio"].shape[0]
        self.proprio_mlp = nn.Sequential(nn.Linear(proprio_in, proprio_dim), nn.SiLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        image = self.image_head(self.cnn(observations["image"].float()))  # (B, image_dim)
        proprio = self.proprio_mlp(observations["proprio"].float())  # (B, proprio_dim)
        return torch.cat([image, proprio], dim=1)  # (B, features_dim)
