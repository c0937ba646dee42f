"""DexAC world: the Gymnasium face of the DexAC-WM world model and its simulator.

Importing this package registers the environments (DexACSim-v0, and DexACWorld-v0 /
DexACReplay-v0 once their modules exist); ``gym.make("dexac_env:DexACWorld-v0")`` imports it.
"""

from dexac_env.registration import register_envs

__version__ = "0.1.0"

register_envs()
