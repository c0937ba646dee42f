"""world_model/object_locator.py and agents/contact.py: colour grounding, the pixel locator,
and touch's contact objective located on the real frame."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from world_model.object_locator import (
    LocatorConfig,
    ObjectLocator,
    colour_of,
    load_locator,
    rgb_to_lab,
    rotate_hue,
    save_locator,
)


def test_lab_conversion_matches_scikit_image():
    color = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(0).random((50, 3))
    ours = rgb_to_lab(torch.from_numpy(rgb)).numpy()
    assert np.abs(ours - color.rgb2lab(rgb[None])[0]).max() < 0.05


def test_hue_rotation_keeps_greys_and_turns_hues():
    grey = torch.full((1, 4, 3), 0.4)
    assert torch.allclose(rotate_hue(grey, torch.tensor([1.0])), grey, atol=1e-6)
    red = torch.tensor([[[0.8, 0.1, 0.1]]])
    turned = rotate_hue(red, torch.tensor([2 * math.pi / 3]))[0, 0]  # a third of a turn
    assert turned[1] > turned[0] and turned[1] > turned[2]  # red -> green
    muted = torch.tensor([[[0.6, 0.45, 0.4]]])  # in gamut at every turn: nothing clips
    back = rotate_hue(rotate_hue(muted, torch.tensor([0.7])), torch.tensor([-0.7]))
    assert torch.allclose(back, muted, atol=1e-5)


def test_colour_words_are_grounded_by_the_colour_survey():
    orange = colour_of("Touch the orange block with your left index finger.")
    assert orange is not None and orange[0] > 0.9 and orange[2] < 0.1
    assert colour_of("push the light blue ball") != colour_of("push the blue ball")
    assert colour_of("touch it with your left index finger") is None


def test_finger_words_name_one_of_the_ten_fingertips():
    from dexac_env.actions import FINGER_NAMES
    from world_model.object_locator import FINGER_WORDS, fingertip_of

    assert FINGER_WORDS == FINGER_NAMES  # restated (world_model does not import dexac_env)
    assert fingertip_of("Touch the red ball with your left thumb finger.") == 0
    assert fingertip_of("Touch the red ball with your right little finger.") == 9
    assert fingertip_of("tap it with the right pinky") == 9
    assert fingertip_of("touch the red ball") is None


def test_table_up_is_the_normal_of_the_plane_the_places_lie_on():
    from world_model.object_locator import table_up

    up = torch.tensor([0.0, -0.8, -0.6])
    g = torch.Generator().manual_seed(0)
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0]))
    places = torch.randn(50, 1, generator=g) * a + torch.randn(50, 1, generator=g) * b \
        + torch.tensor([0.0, 0.1, 0.5])
    assert torch.allclose(table_up(places), up, atol=1e-5)
    with pytest.raises(ValueError):
        table_up(places[:2])


def _scene(n: int, g: torch.Generator, size: int = 32):
    """Frames with two coloured squares on a grey table; the target's colour is the query.
    Target centre: its pixel, back-projected at a depth that grows with the row (as a table
    seen from above does). Colours of any hue, so a test hue never seen is no special case."""
    frames = torch.full((n, size, size, 3), 0.45)
    colours = torch.rand(n, 3, generator=g) * 0.8 + 0.1
    colours[torch.arange(n), torch.randint(0, 3, (n,), generator=g)] = 0.95  # saturated
    other = colours.roll(1, dims=1)  # a different hue
    centre = torch.zeros(n, 3)
    camera = (0.7, 0.7, 0.5, 0.5)
    for i in range(n):
        for colour, is_target in ((colours[i], True), (other[i], False)):
            r, c = torch.randint(3, size - 6, (2,), generator=g).tolist()
            frames[i, r:r + 4, c:c + 4] = colour
            if is_target:
                u, v = (c + 2) / size, (r + 2) / size
                depth = 0.3 + 0.4 * v
                centre[i] = torch.tensor([(u - camera[2]) / camera[0] * depth,
                                          (v - camera[3]) / camera[1] * depth, depth])
    return {"frames": (frames * 255).to(torch.uint8), "colours": colours, "centre": centre,
            "radius": torch.full((n,), 0.02)}


def test_locator_learns_to_find_the_named_colour_and_refuses_bad_input(tmp_path):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    locator = ObjectLocator(LocatorConfig(image_size=32, camera=(0.7, 0.7, 0.5, 0.5), width=16))
    with pytest.raises(ValueError, match="frames must be"):
        locator(torch.zeros(2, 16, 16, 3), torch.zeros(2, 3))
    held_out = _scene(64, g)
    optimiser = torch.optim.Adam(locator.parameters(), lr=3e-3)
    with torch.no_grad():
        before = torch.linalg.vector_norm(
            locator(held_out["frames"], held_out["colours"])[0] - held_out["centre"], dim=-1)
    for _ in range(150):
        loss, logs = locator.loss(_scene(32, g))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    locator.eval()
    with torch.no_grad():
        centre, radius, _ = locator(held_out["frames"], held_out["colours"])
    error = torch.linalg.vector_norm(centre - held_out["centre"], dim=-1)
    assert error.median() < 0.3 * before.median() and error.median() < 0.05  # metres
    assert set(logs) == {"locate_cm", "radius_cm", "heatmap_ce"}
    path = save_locator(locator, tmp_path / "locator.safetensors", {"note": "test"})
    again = load_locator(path)
    with torch.no_grad():
        assert torch.allclose(again(held_out["frames"], held_out["colours"])[0], centre)
    with pytest.raises(ValueError, match="names no colour|needs a colour"):
        again.locate_text(held_out["frames"][:1], ["touch it"])


def test_redraw_fraction_passes_that_share_of_training_frames_through_the_redraw():
    """``redraw_fraction`` sends about that share of a batch through ``locator.redraw`` (after
    the hue turn, so the redraw sees the frames the loss scores) and refuses to train without
    one; 0 never calls it; bad fractions are refused."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    with pytest.raises(ValueError, match="redraw_fraction"):
        LocatorConfig(redraw_fraction=1.5)
    config = LocatorConfig(image_size=32, camera=(0.7, 0.7, 0.5, 0.5), width=16,
                           redraw_fraction=0.5)
    locator = ObjectLocator(config)
    batch = _scene(400, g)
    with pytest.raises(RuntimeError, match="needs locator.redraw"):
        locator.loss(batch)
    seen = []

    def redraw(frames):
        assert frames.dtype == torch.float32 and float(frames.max()) <= 1.0
        seen.append(len(frames))
        return torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)

    locator.redraw = redraw
    loss, _ = locator.loss(batch)
    assert torch.isfinite(loss) and len(seen) == 1 and 150 < seen[0] < 250
    plain = ObjectLocator(LocatorConfig(image_size=32, camera=(0.7, 0.7, 0.5, 0.5), width=16))
    plain.redraw = redraw
    plain.loss(batch)
    assert len(seen) == 1


def test_from_camera_inverts_to_camera():
    from dexac_env.defaults import open_store
    from world_model.keypoint_prior import from_camera, to_camera

    poses = torch.from_numpy(next(iter(open_store(None).episodes())).read("action")[:5])
    points = torch.randn(5, 7, 3)
    assert torch.allclose(from_camera(to_camera(points, poses), poses), points, atol=1e-5)


def _contact(sim, source: str, locator=None, **kwargs):
    """A contact objective and the index (of the ten) of the fingertip the task names."""
    from agents.contact import LocatedContact
    from world_model.task_reward import TaskRewardConfig, TaskRewardHead

    head = TaskRewardHead(TaskRewardConfig(latent_channels=4, latent_size=8, text_dim=6,
                                           width=16, structure="contact")).eval()
    spec = sim.task_spec
    named = (0 if spec.hand == "left" else 5) + spec.finger
    return LocatedContact(head, lambda frame, text: torch.zeros(6), source, locator,
                          **kwargs), named


def _pose_touching(pose: np.ndarray, named: int, target: np.ndarray) -> np.ndarray:
    """``pose`` with its wrist moved so that fingertip ``named`` (of the ten) is at ``target``."""
    from world_model.keypoint_prior import keypoints_3d
    from world_model.task_reward import FINGERTIPS

    tip = keypoints_3d(torch.from_numpy(pose[None]).float())[0, FINGERTIPS[named]].numpy()
    tip = tip.astype(np.float64)
    wrist = 9 if named < 5 else 18
    moved = pose.copy()
    moved[wrist:wrist + 3] += target - tip
    return moved


def test_contact_objective_is_best_on_the_located_surface():
    from dexac_env.sim.env import DexACSimEnv

    sim = DexACSimEnv(task="touch", color_split="test")
    obs, info = sim.reset(seed=5)
    contact, named = _contact(sim, "true")
    start = obs["proprio"].astype(np.float64)
    contact.sync(obs["image"], start, info["task_description"], sim)
    centre, radius = contact.centre.numpy(), contact.radius
    up = np.array([0.0, -1.0, 0.0])  # episode frame: y down
    on_surface = _pose_touching(start, named, centre + radius * up)
    assert contact.finger_weights.argmax() == named  # read from the text
    inside = _pose_touching(start, named, centre)
    scores = contact(np.stack([start, on_surface, inside]))
    assert abs(contact.distance(on_surface[None])[0]) < 1e-4
    assert scores[1] > scores[0] and scores[1] > scores[2]  # two-sided: not inside either
    # the hand the text does not name: its motion costs only with hold_other
    other = 18 if named < 5 else 9
    wandered = on_surface.copy()
    wandered[other:other + 3] += 0.1
    assert contact(wandered[None])[0] == pytest.approx(scores[1])
    contact.hold_other = 1.0
    assert contact(wandered[None])[0] < scores[1] - 1.0  # 10 cm over a ~5 cm length scale
    contact.hold_other = 0.0
    # clearance: another fingertip at the centre intrudes; the hands at rest do not
    neighbour = named + 1 if named % 5 < 4 else named - 1
    shoved = _pose_touching(start, neighbour, centre)
    contact.clearance = 0.005
    assert contact.intrusion(shoved[None])[0] > radius and contact.intrusion(start[None])[0] == 0
    contact.clearance = 0.0
    # from above: the top of the object beats its side, and never below the top's height
    above, _ = _contact(sim, "true", approach="above")
    above.sync(obs["image"], start, info["task_description"], sim)
    world_up = torch.from_numpy(sim.reference_pose[2, :3]).float()
    assert torch.allclose(above.up, world_up)
    side = np.cross(world_up.numpy(), [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    top = _pose_touching(start, named, centre + radius * world_up.numpy())
    beside = _pose_touching(start, named, centre + radius * side)
    assert above(top[None])[0] > above(beside[None])[0]
    assert abs(above.distance(top[None])[0]) < 1e-4
    with pytest.raises(ValueError, match="needs the simulator"):
        contact.sync(obs["image"], start, info["task_description"], None)
    sim.close()


def test_pixel_source_moves_the_located_place_into_the_episode_frame():
    from dexac_env.sim.env import DexACSimEnv
    from world_model.keypoint_prior import from_camera

    class Locator:  # a camera-frame place that moves with the frame's mean brightness
        table_up = None

        def locate_text(self, frames, texts):
            x = frames.float().mean((1, 2, 3)) / 2550.0  # (N,)
            return (torch.stack([0.05 + x, torch.full_like(x, 0.02), torch.full_like(x, 0.5)], -1),
                    torch.full_like(x, 0.02))

    sim = DexACSimEnv(task="touch")
    obs, info = sim.reset(seed=1)
    contact, _ = _contact(sim, "pixels", Locator())
    pose = obs["proprio"].astype(np.float64)
    black = np.zeros_like(obs["image"])
    contact.sync(black, pose, info["task_description"])
    expected = from_camera(torch.tensor([[[0.05, 0.02, 0.5]]]),
                           torch.from_numpy(pose[None]).float())[0, 0]
    assert torch.allclose(contact.centre, expected) and contact.radius == pytest.approx(0.02)
    # fused by the median: one reading 10 cm off (the hand over the object) is outvoted
    fused, _ = _contact(sim, "pixels", Locator(), fuse="median")
    for frame in (black, black, np.full_like(black, 255)):
        fused.sync(frame, pose, info["task_description"])
    assert torch.allclose(fused.centre, expected)
    fused.reset()
    fused.sync(np.full_like(black, 255), pose, info["task_description"])
    assert not torch.allclose(fused.centre, expected)  # a new episode starts afresh
    # the imagined source: each branch is scored against its own frame's place
    imagined, _ = _contact(sim, "imagined", Locator())
    imagined.sync(black, pose, info["task_description"])
    frames = np.stack([black, np.full_like(black, 255)])  # the second's place: 10 cm to the right
    poses = np.stack([pose, pose])
    d = imagined.distance(poses, frames)
    assert d[0] == pytest.approx(contact.distance(pose[None])[0], abs=1e-6) and d[1] != d[0]
    with pytest.raises(ValueError, match="pass frames"):
        imagined.distance(poses)
    # pooled: every branch against the branches' median place; the odd branch is outvoted
    pooled, _ = _contact(sim, "imagined", Locator(), pool="median")
    pooled.sync(black, pose, info["task_description"])
    white = np.full_like(black, 255)
    d = pooled.distance(np.stack([pose] * 3), np.stack([black, white, black]))
    assert d == pytest.approx([contact.distance(pose[None])[0]] * 3, abs=1e-6)
    # with fuse "median", over the episode's pooled readings: two white steps outvote one black
    history, _ = _contact(sim, "imagined", Locator(), pool="median", fuse="median")
    history.sync(black, pose, info["task_description"])
    for frame in (white, white, black):
        d = history.distance(pose[None], frame[None])
    assert d[0] == pytest.approx(imagined.distance(pose[None], white[None])[0], abs=1e-6)
    history.reset()
    assert history.distance(pose[None], black[None])[0] == pytest.approx(
        contact.distance(pose[None])[0], abs=1e-6)
    with pytest.raises(ValueError, match="needs the imagined source"):
        _contact(sim, "pixels", Locator(), pool="median")
    Locator.table_up = torch.tensor([0.0, -0.8, -0.6])
    for source in ("pixels", "imagined"):  # from above, with one place or one per branch
        above, _ = _contact(sim, source, Locator(), approach="above")
        above.sync(black, pose, info["task_description"])
        d = above.distance(poses, frames if source == "imagined" else None)
        assert d.shape == (2,) and np.isfinite(d).all()
        assert (d[0] == d[1]) == (source == "pixels")
    sim.close()
    from agents.contact import LocatedContact

    with pytest.raises(ValueError, match="needs a locator"):
        LocatedContact(contact.head, lambda f, t: torch.zeros(6), "pixels")


def test_mpc_in_imagination_scores_plans_by_the_place_read_on_the_real_frame():
    from agents.actions import action_dim
    from agents.branching import WorldBranch
    from agents.contact import LocatedContact, true_place
    from agents.envs import AgentEnvConfig, make_env
    from agents.evaluate import run_episode
    from agents.planners import CEM, PlannerConfig
    from agents.policies import MPCPolicy
    from dexac_env.defaults import load_world_model
    from world_model.task_reward import TaskRewardConfig, TaskRewardHead

    head = TaskRewardHead(TaskRewardConfig(latent_channels=4, latent_size=8, text_dim=6,
                                           width=16, structure="contact")).eval()
    contact = LocatedContact(head, lambda frame, text: torch.zeros(6), "true")
    world = AgentEnvConfig(kind="world", checkpoint=load_world_model(None), split=None,
                           sampling_steps=1, max_episode_steps=2)
    scorer = WorldBranch(world, population=4, contact=contact)
    planner = CEM(action_dim("wrist_pos_grasp"), PlannerConfig(horizon=2, population=4,
                                                               iterations=1, elites=2))
    env = make_env(AgentEnvConfig(kind="sim", max_episode_steps=2))
    episode = run_episode(env, MPCPolicy(planner, scorer, "mpc_contact"), seed=3)
    assert episode.poses.shape == (2, 57)
    # the last replanning read the object where the simulator holds it
    assert torch.allclose(contact.centre, true_place(env.unwrapped)[0], atol=1e-6)
    # and the planner's returns are the contact objective's: summed log rewards (<= log a)
    assert (planner.last_returns <= 2 * float(head.log_amplitude.detach()) + 1e-6).all()


def test_training_entry_writes_a_scored_locator(tmp_path):
    """Two steps on the shipped store's touch episodes: a locator file with its errors per
    split inside, the gathered rows cached for a rerun."""
    import json

    from dexac_env.defaults import DEFAULT_STORE
    from training.config import ConfigError
    from training.train_locator import main

    out = tmp_path / "locator.safetensors"
    args = ["--config", "configs/locator/touch.yaml", "--no-deepspeed",
            "--set", f"data.stores=[{DEFAULT_STORE}]", "--set", "data.eval_splits=[]",
            "--set", f"data.cache={tmp_path / 'cache'}", "--set", "model.width=16",
            "--set", "trainer.steps=2", "--set", "trainer.batch_size=4",
            "--set", "trainer.checkpoint_every=2", "--set", "trainer.warmup_steps=1",
            "--set", f"trainer.out_dir={tmp_path / 'run'}", "--set", f"output={out}"]
    assert main(args) == 0
    scores = json.loads(out.with_suffix(".json").read_text())["scores"]["train"]
    assert scores["frames"] > 0 and 0 < scores["median_cm"] < 1000
    assert load_locator(out).config.width == 16
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    # trained also on the shipped model's drawings: scored on them too; a fraction without a
    # model to redraw with is refused before training
    redrawn = tmp_path / "redrawn.safetensors"
    with pytest.raises(ConfigError, match="redraw_with"):
        main([*args, "--set", "model.redraw_fraction=0.5"])
    assert main([*args, "--set", "model.redraw_fraction=0.5", "--set", "data.redraw_with=default",
                 "--set", "data.eval_splits=[train]", "--set", f"output={redrawn}",
                 "--set", f"trainer.out_dir={tmp_path / 'run_redrawn'}"]) == 0
    scores = json.loads(redrawn.with_suffix(".json").read_text())["scores"]
    assert {"train", "train_redrawn"} <= set(scores)
    assert scores["train_redrawn"]["frames"] == scores["train"]["frames"]
    assert load_locator(redrawn).config.redraw_fraction == 0.5


def test_shipped_locator_finds_the_named_object_in_the_shipped_episodes():
    """The shipped locator on the first frames of the shipped store's touch episodes (train
    colours): within 3 cm of where the simulator put the named object; it records its table."""
    from dexac_env.defaults import ASSETS_DIR, open_store
    from dexac_env.sim.generate import named_object_start

    locator = load_locator(ASSETS_DIR / "object_locator_touch.safetensors")
    assert locator.table_up is not None and abs(float(locator.table_up.norm()) - 1) < 1e-4
    episodes = [e for e in open_store(None).episodes() if e.attrs.get("task") == "touch"]
    assert episodes
    frames = torch.from_numpy(np.stack([e.read("rgb", 0, 1)[0] for e in episodes]))
    centre, _ = locator.locate_text(frames, [e.attrs["description"] for e in episodes])
    truth = torch.from_numpy(np.stack([named_object_start(e.attrs) for e in episodes]))
    assert (torch.linalg.vector_norm(centre - truth, dim=-1) < 0.03).all()


def test_contact_objective_options_are_checked_before_planning():
    import argparse

    from agents.cli import located_contact

    args = argparse.Namespace(reward_head=None, contact_source="pixels", locator=None,
                              clearance=0.0, hold_other=0.0, approach="any", fuse="last")
    with pytest.raises(ValueError, match="needs --reward-head"):
        located_contact(args, model=None)
    args.reward_head = "dexac_env/assets/task_reward_touch_contact.safetensors"
    with pytest.raises(ValueError, match="needs --locator"):
        located_contact(args, model=None)
    args.locator = "dexac_env/assets/object_locator_touch.safetensors"
    args.fuse = "mean"
    with pytest.raises(ValueError, match="fuse one of"):
        located_contact(args, model=None)
    args.fuse, args.approach = "median", "above"
    contact = located_contact(args, model=None)  # no --pool (a caller's own namespace): per branch
    assert torch.allclose(contact.up, contact.locator.table_up) and contact.pool == "branch"
    args.pool = "median"  # one place for every branch reads imagined frames only
    with pytest.raises(ValueError, match="needs the imagined source"):
        located_contact(args, model=None)
    args.contact_source = "imagined"
    assert located_contact(args, model=None).pool == "median"


def test_locate_in_imagination_starts_from_the_reconstruction_and_writes_its_curve(tmp_path):
    """The imagined episode's first frame is the model's drawing of the real first frame; the
    benchmark writes a per-step error for the real and the imagined frames, and the shipped
    locator finds the object on the real first frame."""
    from agents.envs import AgentEnvConfig, make_env
    from benchmarks.locate_in_imagination import expert_episode, imagine, main
    from dexac_env.defaults import load_world_model

    sim = make_env(AgentEnvConfig(kind="sim", task="touch", color_split="test",
                                  max_episode_steps=2))
    try:
        episode = expert_episode(sim, 1000, 2)
    finally:
        sim.close()
    assert episode["frames"].shape[0] == episode["poses"].shape[0] == episode["truth"].shape[0] == 3
    dream = imagine(AgentEnvConfig(kind="world", task="touch", max_episode_steps=2), [episode], 2)
    assert dream.shape == (1, 3, *episode["frames"].shape[1:])
    model = load_world_model(None)
    with torch.no_grad():
        drawn = model.decode(model.encode(torch.from_numpy(episode["frames"][:1])[None]))
    assert np.abs(dream[0, 0].astype(int) - drawn[0, -1].numpy().astype(int)).max() <= 2
    assert not np.array_equal(dream[0, 2], dream[0, 0])  # the poses moved the imagined hand

    out = tmp_path / "imagination.json"
    assert main(["--seeds", "1", "--steps", "2", "--color-split", "train", "--sampling-steps", "1",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["color_split"] == "train" and result["sampling_steps"] == 1
    real, imagined = result["errors"]["real"], result["errors"]["imagined"]
    assert len(real["median_cm_per_step"]) == len(imagined["median_cm_per_step"]) == 3
    assert real["median_cm_per_step"][0] < 3.0
    drawn = result["errors"]["imagined_drawn_colour"]["median_cm_per_step"]
    assert len(drawn) == 3 and np.isfinite(drawn).all()
    assert out.with_suffix(".png").stat().st_size > 10_000

    # --start-step 1: imagination starts at the expert's step 1; the real frames it is judged
    # against are the same episode's steps 1-2 (a slice off by one would read other frames)
    later = tmp_path / "later.json"
    assert main(["--seeds", "1", "--steps", "1", "--start-step", "1", "--color-split", "train",
                 "--sampling-steps", "1", "--out", str(later)]) == 0
    shifted = json.loads(later.read_text())
    assert shifted["start_step"] == 1
    assert shifted["errors"]["real"]["median_cm_per_step"] == real["median_cm_per_step"][1:]

    held = tmp_path / "held.json"
    assert main(["--seeds", "1", "--steps", "2", "--color-split", "train", "--sampling-steps", "1",
                 "--hold-pose", "--out", str(held)]) == 0
    result = json.loads(held.read_text())
    assert result["hold_pose"]
    real = result["errors"]["real"]["median_cm_per_step"]
    assert real[0] == real[1] == real[2]  # the first frame, repeated: only imagination may drift


def test_drawn_colour_is_read_where_the_real_frame_places_the_object():
    """``colour="drawn"``: the colour is read from the world model's drawing at the place the
    locator finds on the real frame, and that colour (not the text's) is looked for on the
    imagined frames. The drawing here is the real frame with the named object painted over in
    a colour no scene has: the read colour must be the paint, and the locator, asked for it,
    must find the painted object."""
    from agents.contact import true_place
    from dexac_env.sim.env import DexACSimEnv
    from world_model.keypoint_prior import image_fractions, to_camera
    from world_model.object_locator import load_locator

    locator = load_locator("dexac_env/assets/object_locator_touch.safetensors")
    sim = DexACSimEnv(task="touch")  # held-out colours
    obs, info = sim.reset(seed=1000)
    frame, pose = obs["image"], obs["proprio"].astype(np.float64)
    contact, _ = _contact(sim, "imagined", locator, colour="drawn")
    contact.sync(frame, pose, info["task_description"])
    assert contact.needs_drawn_colour
    with pytest.raises(RuntimeError, match="set_drawn_colour"):
        contact.distance(pose[None], frame[None])
    true, _ = true_place(sim)
    camera = to_camera(true[None, None].float(), torch.from_numpy(pose).float())[0]
    u, v = image_fractions(camera, locator.config.camera)[0].tolist()
    row, col = int(v * frame.shape[0]), int(u * frame.shape[1])
    paint = np.array([40, 200, 230], np.uint8)  # a cyan no training or held-out name has
    drawing = frame.copy()
    drawing[max(row - 3, 0):row + 4, max(col - 3, 0):col + 4] = paint
    rgb = contact.set_drawn_colour(drawing, pose)
    np.testing.assert_allclose(rgb, paint / 255.0, atol=1e-9)
    assert not contact.needs_drawn_colour
    centre, _ = contact._locate(drawing[None], pose[None], imagined=True)
    assert torch.linalg.vector_norm(centre[0] - true) < 0.03  # the painted object is found
    contact.sync(frame, pose, info["task_description"])  # the next replanning reads afresh
    assert contact.needs_drawn_colour
    with pytest.raises(ValueError, match="'drawn' needs the imagined source"):
        _contact(sim, "pixels", locator, colour="drawn")
    sim.close()
