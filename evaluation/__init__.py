"""The yardstick of the world model: keypoint detector, PCK per family, distribution metrics,
action sensitivity, the paper's tables and figures (``dexac evaluate``).

Imports ``world_model`` only; :mod:`evaluation.cli` is the glue that reads episode stores.
"""
