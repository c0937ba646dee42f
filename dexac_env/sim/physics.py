"""MuJoCo side of the simulator: model building, kinematic hand/camera driving, physics, rendering.

This module (with ``env.py`` through it) is the only place in the project that imports mujoco.
Offscreen rendering defaults to ``MUJOCO_GL=egl`` (set before mujoco is imported, unless the
caller chose a backend); if an EGL context cannot be made we retry once with OSMesa.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dexac_env.actions import ARKIT_TO_PINHOLE  # noqa: E402
from dexac_env.sim.hand import NUM_FINGERS, SEGMENTS_PER_FINGER, FingerChain, HandGeometry  # noqa: E402
from dexac_env.sim.scene import (  # noqa: E402
    HAND_SIDES,
    TABLE_CENTER_Y,
    TABLE_HALF,
    SceneLayout,
    build_xml,
)

# MuJoCo camera frame (x right, y up, z backward) <-> pinhole frame: the same flip as ARKit.
_PINHOLE_TO_MUJOCO_CAMERA = ARKIT_TO_PINHOLE[:3, :3]
PARTS_PER_HAND = 1 + NUM_FINGERS * SEGMENTS_PER_FINGER  # palm + segments
# Object positions that mean the simulation failed (m, world frame): a centre this far into the
# table top (resting objects have z > 0; one pushed off the table falls to the floor, outside
# the table's footprint), or this far from the origin (the floor is 3 m across, 0.75 m down).
INTO_TABLE_Z = -0.01
FAR_AWAY = 3.0
_BAD_QACC = int(mujoco.mjtWarning.mjWARN_BADQACC)  # looked up once: an enum lookup costs ~5 us


# Shepperd's method: of the four candidate quaternions (each 4 * q * q_k for one component
# q_k), take the one whose own component is largest. _QUAT_CANDIDATE[k] picks candidate k's
# entries from (four diagonal terms, R - R^T at (2, 1) (0, 2) (1, 0), R + R^T at (0, 1) (0, 2)
# (1, 2)); _DIAGONAL_SIGNS gives the diagonal terms 1 +- m00 +- m11 +- m22.
_DIAGONAL_SIGNS = np.array(
    [[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
)
_QUAT_CANDIDATE = np.array([[0, 4, 5, 6], [4, 1, 7, 8], [5, 7, 2, 9], [6, 8, 9, 3]])


def quat_from_matrix(rot: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) unit quaternions w, x, y, z (vectorised Shepperd)."""
    rot = np.asarray(rot, dtype=np.float64)
    m = np.diagonal(rot, axis1=1, axis2=2)[:, None, :] * _DIAGONAL_SIGNS  # (N, 4, 3)
    diagonal = 1 + m[..., 0] + m[..., 1] + m[..., 2]  # (N, 4)
    skew = rot - np.swapaxes(rot, 1, 2)
    sym = rot + np.swapaxes(rot, 1, 2)
    terms = np.concatenate(
        [diagonal, skew[:, [2, 0, 1], [1, 2, 0]], sym[:, [0, 0, 1], [1, 2, 2]]], axis=-1
    )  # (N, 10)
    best = np.argmax(diagonal, axis=-1)
    quat = terms[np.arange(len(rot))[:, None], _QUAT_CANDIDATE[best]]
    quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    return quat * np.where(quat[:, :1] < 0, -1.0, 1.0)


def mocap_path(
    start: tuple[np.ndarray, np.ndarray], end: tuple[np.ndarray, np.ndarray], steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mocap targets of ``steps`` physics substeps moving from ``start`` to ``end`` (each a pair
    pos (N, 3), quat (N, 4) wxyz): positions lerped, quaternions nlerped along the shorter arc,
    the first substep one step away from ``start``. Returns pos (steps, N, 3), quat (steps, N, 4);
    the last row is ``end`` (quaternions normalised and on ``start``'s side)."""
    pos0, quat0 = start
    pos1, quat1 = end
    quat1 = quat1 * np.where(np.sum(quat0 * quat1, -1, keepdims=True) < 0, -1.0, 1.0)
    alpha = (np.arange(1, steps + 1) / steps)[:, None, None]  # (steps, 1, 1)
    pos = (1 - alpha) * pos0 + alpha * pos1
    quat = (1 - alpha) * quat0 + alpha * quat1
    return pos, quat / np.linalg.norm(quat, axis=-1, keepdims=True)


def _make_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    try:
        return mujoco.Renderer(model, size, size)
    except Exception as egl_error:  # noqa: BLE001 - any GL failure: retry with OSMesa once
        if os.environ.get("MUJOCO_GL") != "egl":
            raise
        try:
            from mujoco.osmesa import GLContext
            from mujoco.rendering.classic import gl_context

            gl_context.GLContext = GLContext
            return mujoco.Renderer(model, size, size)
        except Exception as osmesa_error:  # noqa: BLE001
            raise RuntimeError(
                f"offscreen rendering failed with EGL ({egl_error}) and OSMesa ({osmesa_error});"
                " install libegl1 or libosmesa6 and set MUJOCO_GL=egl or MUJOCO_GL=osmesa"
            ) from osmesa_error


class SimPhysics:
    """One compiled scene: objects under physics, kinematic hands and camera, a renderer.

    Mocap order: head camera, then per hand (left, right) the palm and 15 finger segments.
    """

    def __init__(
        self,
        layout: SceneLayout,
        geometry: HandGeometry,
        resolution: int,
        fovy: float,
        physics_dt: float,
        previous: SimPhysics | None = None,
    ):
        self.layout = layout
        self.resolution = resolution
        self.model = mujoco.MjModel.from_xml_string(
            build_xml(layout, geometry, fovy, physics_dt, resolution)
        )
        self.data = mujoco.MjData(self.model)
        self._renderer = self._adopt_renderer(previous)
        self._seg_renderer: mujoco.Renderer | None = None
        names = ["head"]
        for side in HAND_SIDES:
            names.append(f"{side}_palm_body")
            names += [
                f"{side}_f{f}_s{s}" for f in range(NUM_FINGERS) for s in range(SEGMENTS_PER_FINGER)
            ]
        targets = names[:1] + [f"{n}_target" for n in names[1:]]
        body_ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, n) for n in targets]
        self._mocap_index = np.array([self.model.body_mocapid[b] for b in body_ids])
        # the targets cover every mocap body once; advance copies them in MuJoCo's order
        assert np.array_equal(np.sort(self._mocap_index), np.arange(self.model.nmocap))
        self._mocap_order = np.argsort(self._mocap_index)
        self._part_body = np.array(
            [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, n) for n in names[1:]]
        )
        self._part_qpos = np.array(
            [self.model.jnt_qposadr[self.model.body_jntadr[b]] for b in self._part_body]
        )
        self._part_qvel = np.array(
            [self.model.jnt_dofadr[self.model.body_jntadr[b]] for b in self._part_body]
        )
        hand_parts = self._part_body.reshape(len(HAND_SIDES), PARTS_PER_HAND)
        self._palm_body = hand_parts[:, 0]  # (2,)
        self._distal_body = hand_parts[:, SEGMENTS_PER_FINGER::SEGMENTS_PER_FINGER]  # (2, 5)
        self._distal_length = np.stack([geometry.lengths[:, 2]] * len(HAND_SIDES))  # (2, 5)
        object_qpos = [
            self.model.jnt_qposadr[
                self.model.body_jntadr[
                    mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, o.name)
                ]
            ]
            for o in layout.objects
        ]
        self._object_qpos = np.array(object_qpos, dtype=np.int64)[:, None] + np.arange(7)  # (N, 7)
        self._camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, "ego")
        self.hand_geom_ids = {
            side: np.array(
                [
                    g
                    for g in range(self.model.ngeom)
                    if (
                        mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
                    ).startswith(side + "_")
                ]
            )
            for side in HAND_SIDES
        }

    def _adopt_renderer(self, previous: SimPhysics | None) -> mujoco.Renderer:
        """Reuse the previous scene's GL context and MjrContext when possible.

        Making a renderer costs ~0.2 s (GL context, texture upload), more than a whole 64 px
        episode of physics. Every scene has the same assets (textures, materials) in the same
        order, so the uploaded context stays valid; only the model and the geometry buffer
        (MjvScene) are swapped. Relies on mujoco.Renderer's ``_model``/``_scene`` attributes
        (mujoco 3.x/4.x); any mismatch falls back to a fresh renderer."""
        if previous is not None and previous._renderer is not None:
            renderer, old = previous._renderer, previous.model
            same_assets = (old.ntex, old.nmat, old.ntexdata) == (
                self.model.ntex,
                self.model.nmat,
                self.model.ntexdata,
            )
            if (
                same_assets
                and previous.resolution == self.resolution
                and hasattr(renderer, "_scene")
            ):
                renderer._model = self.model
                renderer._scene = mujoco.MjvScene(model=self.model, maxgeom=10000)
                previous._renderer = None  # now ours: the previous scene must not close it
                return renderer
        return _make_renderer(self.model, self.resolution)

    # ------------------------------------------------------------------ kinematic targets
    @staticmethod
    def mocap_targets(
        camera: np.ndarray, wrists: dict[str, np.ndarray], chains: dict[str, FingerChain]
    ):
        """World poses of all mocap bodies: camera (4, 4) pinhole camera-to-world, wrists
        {side: (4, 4)}, chains {side: FingerChain in the wrist frame}. Returns pos (33, 3),
        quat (33, 4)."""
        positions = [camera[:3, 3][None]]
        rotations = [(camera[:3, :3] @ _PINHOLE_TO_MUJOCO_CAMERA)[None]]
        for side in HAND_SIDES:
            rot_w, pos_w = wrists[side][:3, :3], wrists[side][:3, 3]
            chain = chains[side]
            positions += [pos_w[None], chain.seg_pos.reshape(-1, 3) @ rot_w.T + pos_w]
            rotations += [rot_w[None], rot_w @ chain.seg_rot.reshape(-1, 3, 3)]
        return np.concatenate(positions), quat_from_matrix(np.concatenate(rotations))

    def set_mocap(self, pos: np.ndarray, quat: np.ndarray) -> None:
        self.data.mocap_pos[self._mocap_index] = pos
        self.data.mocap_quat[self._mocap_index] = quat

    def snap_hands(self) -> None:
        """Put every hand part exactly on its mocap target, at rest (used at reset)."""
        for part, (qpos, qvel) in enumerate(zip(self._part_qpos, self._part_qvel, strict=True)):
            mocap = self._mocap_index[1 + part]
            self.data.qpos[qpos : qpos + 3] = self.data.mocap_pos[mocap]
            self.data.qpos[qpos + 3 : qpos + 7] = self.data.mocap_quat[mocap]
            self.data.qvel[qvel : qvel + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def hand_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Simulated hands: palms (2, 4, 4) world poses and fingertips (2, 5, 3) world positions
        (end of each distal segment), left then right."""
        palms = np.zeros((2, 4, 4))
        palms[:, :3, :3] = self.data.xmat[self._palm_body].reshape(2, 3, 3)
        palms[:, :3, 3] = self.data.xpos[self._palm_body]
        palms[:, 3, 3] = 1.0
        distal_rot = self.data.xmat[self._distal_body].reshape(2, NUM_FINGERS, 3, 3)
        tips = (
            self.data.xpos[self._distal_body] + distal_rot[..., 0] * self._distal_length[..., None]
        )
        return palms, tips

    def substep_count(self, duration: float) -> int:
        """How many physics steps (``mj_step`` calls) ``duration`` seconds take."""
        return max(1, int(round(duration / self.model.opt.timestep)))

    def advance(
        self,
        start: tuple[np.ndarray, np.ndarray],
        end: tuple[np.ndarray, np.ndarray],
        duration: float,
    ) -> None:
        """Step physics for ``duration`` s while the mocap bodies move linearly from start to end
        (positions lerped, quaternions nlerped), then update kinematics for rendering."""
        order = self._mocap_order  # targets in MuJoCo's mocap order: two plain copies a substep
        pos, quat = mocap_path(
            (start[0][order], start[1][order]),
            (end[0][order], end[1][order]),
            self.substep_count(duration),
        )
        for pos_k, quat_k in zip(pos, quat, strict=True):
            np.copyto(self.data.mocap_pos, pos_k)
            np.copyto(self.data.mocap_quat, quat_k)
            mujoco.mj_step(self.model, self.data)
        # mj_step leaves body poses at the state before its last integration; rendering and
        # hand_poses read body, geom and camera poses only (the next mj_step recomputes the rest)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def unstable(self, warnings_before: int) -> bool:
        """Whether the last steps left the physical world: a non-finite state, MuJoCo's
        "Nan, Inf or huge value in QACC" warning since its count was ``warnings_before``, or an
        object below the table or flung far from it."""
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))):
            return True
        if self.bad_acceleration_count() > warnings_before:
            return True
        pos = self.object_poses()[:, :3]
        over_table = (np.abs(pos[:, 0]) < TABLE_HALF[0]) & (
            np.abs(pos[:, 1] - TABLE_CENTER_Y) < TABLE_HALF[1]
        )
        into_table = over_table & (pos[:, 2] < INTO_TABLE_Z)
        return bool(np.any(into_table) or np.any(np.abs(pos) > FAR_AWAY))

    def bad_acceleration_count(self) -> int:
        return int(self.data.warning[_BAD_QACC].number)

    def recover(self, state: np.ndarray, mocap: tuple[np.ndarray, np.ndarray]) -> None:
        """Go back to ``state`` (from :meth:`get_state`, taken before the failed steps), objects at
        rest, the hands placed on the ``mocap`` targets (pos, quat) they were sent to."""
        self.set_state(state)
        self.set_mocap(*mocap)
        self.data.qvel[:] = 0.0
        self.snap_hands()

    def settle(self, duration: float) -> None:
        """Let objects come to rest (hands held still on their targets)."""
        self.snap_hands()
        for _ in range(self.substep_count(duration)):
            mujoco.mj_step(self.model, self.data)
        self.data.qvel[:] = 0.0
        self.snap_hands()
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ reading the scene
    def object_poses(self) -> np.ndarray:
        """(N, 7) world object poses: position xyz, quaternion wxyz."""
        return self.data.qpos[self._object_qpos]  # fancy indexing: a copy

    def set_object_poses(self, poses: np.ndarray) -> None:
        self.data.qpos[self._object_qpos] = poses
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 image from the egocentric camera."""
        self._renderer.update_scene(self.data, camera=self._camera_id)
        return self._renderer.render()

    def render_segmentation(self) -> np.ndarray:
        """(H, W) int32 geom id per pixel (-1: background)."""
        if self._seg_renderer is None:
            self._seg_renderer = _make_renderer(self.model, self.resolution)
            self._seg_renderer.enable_segmentation_rendering()
        self._seg_renderer.update_scene(self.data, camera=self._camera_id)
        seg = self._seg_renderer.render()
        return np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1).astype(
            np.int32
        )

    def get_state(self) -> np.ndarray:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return state

    def set_state(self, state: np.ndarray) -> None:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        expected = mujoco.mj_stateSize(self.model, spec)
        if state.shape != (expected,):
            raise ValueError(f"physics state must have shape ({expected},), got {state.shape}")
        mujoco.mj_setState(self.model, self.data, state, spec)
        mujoco.mj_forward(self.model, self.data)

    def close(self) -> None:
        for renderer in (self._renderer, self._seg_renderer):
            if renderer is not None:
                renderer.close()
        self._seg_renderer = None
