"""DexAC-WM: the action-conditioned latent video world model.

Imports nothing from the other packages of the project. Entry point: :class:`WorldModel`
with :class:`WorldModelConfig` (``WorldModelConfig.from_size("tiny", variant="dexac")``).
"""

from world_model.config import SIZES, WorldModelConfig
from world_model.facade import WorldModel
from world_model.semantic import SemanticFeatures
from world_model.version import __version__

__all__ = ["SIZES", "SemanticFeatures", "WorldModel", "WorldModelConfig", "__version__"]
