"""DexAC-WM: the action-conditioned latent video world model.

Imports nothing from the other packages of the project. Entry point: :class:`WorldModel`
with :class:`WorldModelConfig` (``WorldModelConfig.from_size("tiny", variant="dexac")``).
"""

__version__ = "0.1.0"

from world_model.config import SIZES, WorldModelConfig  # noqa: E402
from world_model.facade import WorldModel  # noqa: E402
from world_model.semantic import SemanticFeatures  # noqa: E402

__all__ = ["SIZES", "SemanticFeatures", "WorldModel", "WorldModelConfig", "__version__"]
