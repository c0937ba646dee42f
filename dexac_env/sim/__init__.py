"""DexACSim-v0: a MuJoCo two-hand egocentric simulator (the only package that imports mujoco).

Modules: ``hand`` (capsule hand, FK, analytic fingertip IK; numpy only), ``scene`` (layouts,
MJCF), ``tasks`` (sampling, rewards, success), ``physics`` (MuJoCo model, kinematic driving,
rendering), ``env`` (``DexACSimEnv``), ``experts`` (scripted experts, play motion),
``generate`` (data set), ``video``, ``cli``. Importing this package imports nothing heavy.
"""
