"""Policies and planners inside the DexAC world model, judged in the simulator (docs/agents.md).

Imports dexac_env's public faces; nothing in dexac_env, world_model or training imports this.
"""
