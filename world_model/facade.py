"""The WorldModel facade: what the env, the trainer and the agents call.

``encode`` frames to latents, ``predict`` the next chunk of latents from context latents and an
action chunk, ``decode`` latents to frames, ``reward`` from latents; ``loss`` for training;
``save_pretrained`` / ``from_pretrained`` for checkpoints (checkpoint.py).

Action chunk convention: ``(B, 1 + action_frames, 57)`` in raw units; row 0 is the pose of the
last context frame, rows 1.. the target poses of the predicted frames (DESIGN.md: action[t] is
the pose frame t shows).
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np
import torch
from torch import nn

from world_model.action_tokenizer import ACTION_DIM
from world_model.backbones import build_backbone
from world_model.checkpoint import read_metadata, read_weights, save_world_model
from world_model.conditioning import build_conditioner
from world_model.config import WorldModelConfig
from world_model.cuda_graphs import CudaGraphCache
from world_model.dit import DiTContext
from world_model.flow import FlowMatching
from world_model.reward_head import RewardHead
from world_model.sampler import FlowSampler, VelocityFn
from world_model.semantic import SemanticEncoder, SemanticFeatures
from world_model.tokenizer import VideoTokenizer

Generators = torch.Generator | list[torch.Generator] | None


def _repeat_kv(kv: list[tuple[torch.Tensor, torch.Tensor]] | None, times: int):
    if kv is None:
        return None
    return [(k.repeat(times, 1, 1, 1), v.repeat(times, 1, 1, 1)) for k, v in kv]


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 in hardware (Intel AMX tiles or AVX512-BF16), where
    ``precision="bf16"`` pays; elsewhere (AVX2-only CPUs such as AMD Zen 3) oneDNN emulates
    bf16 and an imagined step ran ~6x slower than fp32 (E24). Torch exposes the checks only
    as private ``torch.cpu`` functions; a torch without them counts as no."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


class WorldModel(nn.Module):
    """Tokenizer + semantic encoders + action conditioner + DiT + reward head.

    Args:
        config: the full config.
        action_mean, action_std: (57,) per-dimension statistics of the training actions.
        tokenizer_vae_config: wan only, the AutoencoderKLWan config to build without its
            weight directory (set by ``from_pretrained``).
        load_backbone_weights: read the backbone's external weight directory (the cosmos
            backbone's ``cosmos.pretrained_dir``); ``from_pretrained`` passes False, as its
            file holds every weight.
    """

    def __init__(
        self,
        config: WorldModelConfig,
        action_mean: np.ndarray,
        action_std: np.ndarray,
        tokenizer_vae_config: dict | None = None,
        load_backbone_weights: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = VideoTokenizer(config.tokenizer, vae_config=tokenizer_vae_config)
        self.semantic_encoder = (
            SemanticEncoder(config.semantic) if config.semantic.enabled else None
        )
        self.conditioner = build_conditioner(
            config.conditioning,
            num_rows=config.action_rows,
            hidden_dim=config.dit.hidden_dim,
            chunk_frames=config.chunk_frames,
            action_mean=action_mean,
            action_std=action_std,
        )
        semantic_dims = None
        if self.semantic_encoder is not None:
            semantic_dims = (self.semantic_encoder.image_dim, self.semantic_encoder.text_dim)
        self.dit = build_backbone(  # our DiT or Cosmos (config.backbone); named dit for both
            config,
            action_token_dim=config.conditioning.token_dim
            if config.conditioning.uses_local
            else None,
            semantic_dims=semantic_dims,
            load_weights=load_backbone_weights,
        )
        self.reward_head = (
            RewardHead(config.reward, config.tokenizer.latent_channels)
            if config.reward.enabled
            else None
        )
        self.flow = FlowMatching(config.flow)
        self.sampler = FlowSampler(config.sampler)
        self._semantic_cache: tuple[weakref.ref, list] | None = None
        self.precision = "fp32"  # set_inference
        self._graphs: CudaGraphCache | None = None

    # -- statistics -------------------------------------------------------------------------
    @property
    def action_mean(self) -> np.ndarray:
        return self.conditioner.normalizer.mean.cpu().numpy().astype(np.float64)

    @property
    def action_std(self) -> np.ndarray:
        return self.conditioner.normalizer.std.cpu().numpy().astype(np.float64)

    @property
    def device(self) -> torch.device:
        return self.conditioner.normalizer.mean.device

    # -- pixels <-> latents -----------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, T, H, W, 3) -> normalised latents (B, T', C, h, w)."""
        return self.tokenizer.encode(frames.to(self.device))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, T', C, h, w) -> frames uint8 (B, T, H, W, 3)."""
        with self._autocast():
            return self.tokenizer.decode(latents.to(self.device))

    @torch.no_grad()
    def encode_semantic(self, frame: torch.Tensor, texts: list[str]) -> SemanticFeatures | None:
        """frame uint8 (B, H, W, 3), B task texts -> features reused by every step of a
        rollout (None when the semantic branch is off)."""
        if self.semantic_encoder is None:
            return None
        return self.semantic_encoder.extract(frame.to(self.device), texts)

    # -- conditioning helpers ---------------------------------------------------------------
    def _check(self, context_latents: torch.Tensor, action_chunk: torch.Tensor) -> None:
        cfg = self.config
        c = cfg.tokenizer.latent_channels
        if context_latents.ndim != 5 or context_latents.shape[1:3] != (cfg.context_frames, c):
            raise ValueError(
                f"context_latents must have shape (B, {cfg.context_frames}, {c}, h, w), "
                f"got {tuple(context_latents.shape)}"
            )
        expected = (context_latents.shape[0], cfg.action_rows, ACTION_DIM)
        if tuple(action_chunk.shape) != expected:
            raise ValueError(
                f"action_chunk must have shape {expected} (row 0 = pose of the last context frame, "
                f"then {cfg.action_frames} target poses), got {tuple(action_chunk.shape)}"
            )

    def _semantic_kv(self, semantic: SemanticFeatures | None, use_cache: bool):
        """Per-block semantic keys/values; cached for the SemanticFeatures object of a rollout."""
        if semantic is None or self.semantic_encoder is None:
            if semantic is not None:
                raise ValueError("semantic features given, but this model's semantic branch is off")
            return None
        if use_cache and self._semantic_cache is not None and self._semantic_cache[0]() is semantic:
            return self._semantic_cache[1]
        on_device = semantic.to(self.device)
        kv = self.dit.semantic_keys_values(on_device.image, on_device.text)
        if use_cache:
            self._semantic_cache = (weakref.ref(semantic), kv)
        return kv

    def compile_network(self, freeze: bool = False, **options) -> None:
        """``torch.compile`` the network in place (state-dict names unchanged), with fixed
        shapes: each batch size compiles once, on its first call. ``options`` go to
        ``nn.Module.compile`` (e.g. ``mode="reduce-overhead"`` for CUDA graphs on a GPU).
        ``freeze``: TorchInductor's freezing, for inference: the weights become constants of
        the compiled code (folded with their bf16 casts under autocast, prepacked for oneDNN
        on a CPU), so weights changed after the first call are not seen."""
        if freeze:
            options["options"] = {**options.get("options", {}), "freezing": True}
        # dynamo keeps at most ``recompile_limit`` (8) compiled versions of a function's code,
        # counted over every model in the process, and past it runs the function eagerly
        # without a word: batch sizes x precisions x the DiT's calls with and without keypoint
        # tokens passed 8 in one benchmark (E24), so the limit is raised
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        self.dit.compile(dynamic=False, **options)

    def set_inference(self, precision: str = "fp32", cuda_graphs: bool = False) -> None:
        """How ``predict`` and ``decode`` run (training and ``loss`` are not affected).

        precision: ``"fp32"``, or ``"bf16"``: autocast to bfloat16 on the model's device
            (matmuls and convolutions in bf16; the sampler's state and the noise stay float32).
        cuda_graphs: replay ``predict``'s network work (every sampler step, guidance included)
            as a CUDA graph captured on the first call with each batch size
            (world_model/cuda_graphs.py); the noise is still drawn eagerly from the given
            generators, so results depend on the seeds as before. CUDA only.
        """
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(
                f"cuda_graphs needs the model on a CUDA device, it is on {self.device}"
            )
        if precision == "bf16" and self.device.type == "cpu" and not cpu_has_bf16_matmul():
            warnings.warn(
                "precision='bf16' on a CPU without bf16 matmul units (neither AMX nor "
                "AVX512-BF16): the matmuls run emulated, several times slower than fp32 "
                "(docs/experiments.md E24); keep fp32 on this machine",
                RuntimeWarning, stacklevel=2,
            )
        self.precision = precision
        if not cuda_graphs:
            self._graphs = None
        elif self._graphs is None:  # graphs already captured stay
            self._graphs = CudaGraphCache(self._integrate)

    def _autocast(self):
        """The autocast context of ``precision`` (a no-op context for fp32). Its cache is off,
        as CUDA-graph capture needs, and a step reuses no cast weight anyway."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16",
            cache_enabled=False,
        )

    def clear_cache(self) -> None:
        """Forget cached per-rollout tensors (call after changing the weights in place)."""
        self._semantic_cache = None

    def train(self, mode: bool = True) -> WorldModel:
        self.clear_cache()
        return super().train(mode)

    def _context(self, actions: torch.Tensor, drop: torch.Tensor | None, semantic_kv) -> DiTContext:
        conditioning = self.conditioner(actions, drop)
        return self.dit.prepare(conditioning, semantic_kv, self.config.context_frames)

    def _noise(self, shape: tuple[int, ...], generator: Generators) -> torch.Tensor:
        """Standard normal noise on the model's device, drawn on each generator's own device (a
        CPU generator per env keeps a GPU batch to one host-to-device copy, not one kernel
        launch per env)."""
        if isinstance(generator, list):  # one generator per sample: batch-invariant results
            if len(generator) != shape[0]:
                raise ValueError(f"need {shape[0]} generators, got {len(generator)}")
            noise = torch.cat(
                [torch.randn((1, *shape[1:]), generator=g, device=g.device) for g in generator]
            )
            return noise.to(self.device)
        device = self.device if generator is None else generator.device
        return torch.randn(shape, generator=generator, device=device).to(self.device)

    # -- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        context_latents: torch.Tensor,
        action_chunk: torch.Tensor,
        semantic: SemanticFeatures | None = None,
        generator: Generators = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
    ) -> torch.Tensor:
        """Sample the next ``chunk_frames`` latent frames.

        context_latents (B, context_frames, C, h, w); action_chunk (B, 1 + action_frames, 57)
        raw units; semantic from :meth:`encode_semantic` (same object over a rollout: its
        projection is cached). ``generator``: one, or one per sample. Returns
        (B, chunk_frames, C, h, w). Deterministic for given generators.
        """
        cfg = self.config
        context_latents = context_latents.to(self.device, torch.float32)
        action_chunk = torch.as_tensor(action_chunk, dtype=torch.float32, device=self.device)
        self._check(context_latents, action_chunk)
        b, _, c, h, w = context_latents.shape
        scale = cfg.sampler.cfg_scale if cfg_scale is None else cfg_scale
        # 1. everything constant over the sampler steps, computed once
        semantic_kv = self._semantic_kv(semantic, use_cache=not torch.is_grad_enabled())
        noise = self._noise((b, cfg.chunk_frames, c, h, w), generator)
        context_noise = None
        if cfg.sampler.context_noise > 0:
            context_noise = self._noise(tuple(context_latents.shape), generator)
        steps = int(num_steps or cfg.sampler.num_steps)
        # 2. integrate from noise: deterministic given the noise, so it can be a CUDA graph
        with self._autocast():
            args = (context_latents, action_chunk, semantic_kv, noise, context_noise, scale, steps)
            if self._graphs is not None:
                return self._graphs(*args, key=self.precision)
            return self._integrate(*args)

    def _integrate(self, context_latents, action_chunk, semantic_kv, noise, context_noise,
                   scale: float, num_steps: int) -> torch.Tensor:
        """``predict`` after its noise is drawn: pure tensor work, no host sync."""
        start = self.config.sampler.start_sigma
        if start < 1:  # SDEdit's start: the last context frame, noised to ``start``
            noise = self.flow.add_noise(
                context_latents[:, -1:].expand_as(noise), noise, noise.new_full((len(noise),), start)
            )
        context_latents, context_sigma = self.sampler_context(context_latents, lambda: context_noise)
        velocity_fn = self._guided_velocity_fn(
            context_latents, action_chunk, semantic_kv, scale, context_sigma
        )
        return self.sampler.sample(velocity_fn, noise, num_steps=num_steps, start_sigma=start)

    def _guided_velocity_fn(
        self, context_latents, action_chunk, semantic_kv, scale: float, context_sigma=None
    ) -> VelocityFn:
        """The velocity of the noisy chunk given the context (clean, or noised to
        ``context_sigma`` (B,) when the sampler's ``context_noise`` is on), with classifier-free
        guidance on actions when ``scale != 1``: ``v_uncond + scale (v_cond - v_uncond)``, both
        halves in one batched network call ("uncond" = the conditioner's learned "no action").

        This is the only place guidance lives; the sampler just integrates what it returns.
        """
        cfg = self.config
        guided = scale != 1.0
        if guided:  # conditional and unconditional halves in one batch
            b = context_latents.shape[0]
            drop = torch.arange(2 * b, device=self.device) >= b
            context = self._context(action_chunk.repeat(2, 1, 1), drop, _repeat_kv(semantic_kv, 2))
            clean = context_latents.repeat(2, 1, 1, 1, 1)
            if context_sigma is not None:
                context_sigma = context_sigma.repeat(2)
        else:
            context = self._context(action_chunk, None, semantic_kv)
            clean = context_latents
        context.context_sigma = context_sigma

        def velocity_fn(noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            if guided:
                noisy, sigma = noisy.repeat(2, 1, 1, 1, 1), sigma.repeat(2)
            frames = torch.cat([clean, noisy], dim=1)  # (B', T, C, h, w)
            velocity = self.dit(frames, sigma, context, cfg.context_frames)[:, cfg.context_frames :]
            if not guided:
                return velocity  # (B, F, C, h, w)
            conditional, unconditional = velocity.chunk(2)  # (B, F, C, h, w) each
            return unconditional + scale * (conditional - unconditional)

        return velocity_fn

    def sampler_context(
        self, context_latents: torch.Tensor, draw_noise
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The context latents as the sampler gives them to the network: noised to
        ``sampler.context_noise`` (the level the model was trained to expect; ``draw_noise()``
        gives the noise) with that level (B,), or unchanged with None when it is 0."""
        level = self.config.sampler.context_noise
        if level <= 0:
            return context_latents, None
        sigma = torch.full((context_latents.shape[0],), level, device=context_latents.device)
        return self.flow.add_noise(context_latents, draw_noise(), sigma), sigma

    def _batch_semantic_kv(self, batch: dict[str, torch.Tensor]):
        """Per-block semantic keys/values from a batch's cached features (None without them)."""
        if self.semantic_encoder is None or "semantic_image" not in batch:
            return None
        return self.dit.semantic_keys_values(
            batch["semantic_image"].to(self.device, torch.float32),
            batch["semantic_text"].to(self.device, torch.float32),
        )

    def conditional_velocity(
        self,
        batch: dict[str, torch.Tensor],
        context_latents: torch.Tensor,
        context_sigma: torch.Tensor | None = None,
    ) -> VelocityFn:
        """The velocity function the sampler integrates for a training batch's windows (no
        action dropout, no guidance), with gradients when they are enabled: what step
        distillation (world_model/distill.py) matches between teacher and student.

        batch: actions (B, 1 + action_frames, 57), optional semantic_image / semantic_text (the
        cached features, as in :meth:`loss`); context_latents (B, context_frames, C, h, w) as
        the sampler gives them (``context_sigma`` (B,) when noised).
        """
        actions = batch["actions"].to(self.device, torch.float32)
        self._check(context_latents, actions)
        semantic_kv = self._batch_semantic_kv(batch)
        return self._guided_velocity_fn(context_latents, actions, semantic_kv, 1.0, context_sigma)

    @torch.no_grad()
    def predict_from_batch(
        self,
        batch: dict[str, torch.Tensor],
        context_latents: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
    ) -> torch.Tensor:
        """What :meth:`predict` samples for a training batch's windows from ``noise`` (B,
        chunk_frames, C, h, w), with the batch's cached semantic features in place of
        SemanticFeatures and no guidance: the frames an env rollout would feed back, for
        training on the model's own rollouts (training/own_rollout.py)."""
        actions = batch["actions"].to(self.device, torch.float32)
        context_latents = context_latents.to(self.device, torch.float32)
        self._check(context_latents, actions)
        context_noise = None
        if self.config.sampler.context_noise > 0:
            context_noise = torch.randn_like(context_latents)
        return self._integrate(
            context_latents, actions, self._batch_semantic_kv(batch), noise.to(self.device),
            context_noise, 1.0, num_steps,
        )

    def reward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, T, C, h, w) -> (reward (B, T), success_logit (B, T))."""
        if self.reward_head is None:
            raise ValueError("this world model has no reward head (config.reward.enabled is False)")
        return self.reward_head(latents.to(self.device))

    # -- training ---------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching loss on the predicted chunk (+ reward-head loss when the batch has
        ``reward`` and ``success``).

        batch: context_latents (B, context_frames, C, h, w), target_latents (B, chunk_frames,
        C, h, w), actions (B, 1 + action_frames, 57); optional semantic_image (B, S, D_img) and
        semantic_text (B, S', D_txt); optional reward, success (B, chunk_frames).
        """
        cfg = self.config
        for key in ("context_latents", "target_latents", "actions"):
            if key not in batch:
                raise ValueError(f"batch needs {key!r}; got keys {sorted(batch)}")
        context_latents = batch["context_latents"].to(self.device, torch.float32)
        target = batch["target_latents"].to(self.device, torch.float32)
        actions = batch["actions"].to(self.device, torch.float32)
        self._check(context_latents, actions)
        if target.shape[1] != cfg.chunk_frames or target.shape[2:] != context_latents.shape[2:]:
            raise ValueError(
                f"target_latents must have shape (B, {cfg.chunk_frames}, "
                f"{', '.join(map(str, context_latents.shape[2:]))}), got {tuple(target.shape)}"
            )
        # 1. conditioning, with action dropout for classifier-free guidance
        drop = None
        if self.training and cfg.conditioning.action_dropout > 0:
            drop = (
                torch.rand(actions.shape[0], device=self.device) < cfg.conditioning.action_dropout
            )
        semantic_kv = self._batch_semantic_kv(batch)
        context = self._context(actions, drop, semantic_kv)
        # context-noise augmentation: noise the context to a random level, and say which
        if self.training and cfg.flow.context_noise_max > 0:
            b = context_latents.shape[0]
            level = torch.rand(b, device=self.device) * cfg.flow.context_noise_max  # (B,)
            context_latents = self.flow.add_noise(
                context_latents, torch.randn_like(context_latents), level
            )
            context.context_sigma = level

        # 2. flow matching on the predicted chunk only (the context frames are not scored)
        def velocity_fn(noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            frames = torch.cat([context_latents, noisy], dim=1)  # (B, T, C, h, w)
            return self.dit(frames, sigma, context, cfg.context_frames)[:, cfg.context_frames :]

        loss, logs = self.flow.loss(velocity_fn, target)
        # 3. reward head on the clean target latents
        if self.reward_head is not None and "reward" in batch and "success" in batch:
            reward_loss, reward_logs = self.reward_head.loss(
                target, batch["reward"].to(self.device), batch["success"].to(self.device)
            )
            loss = loss + reward_loss
            logs.update(reward_logs)
        logs["loss"] = float(loss.detach())
        return loss, logs

    # -- checkpoints ------------------------------------------------------------------------
    def save_pretrained(
        self, path: str, inference_only: bool = False, dtype: str = "float32"
    ) -> str:
        """Write ``path`` (a directory, or a ``.safetensors`` file). Returns the file written.

        ``inference_only`` / ``dtype="float16"``: the compact form shipped with the package
        (world_model/checkpoint.py)."""
        return save_world_model(self, path, inference_only=inference_only, dtype=dtype)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        device: str | torch.device = "cpu",
        config: WorldModelConfig | None = None,
    ) -> WorldModel:
        """Load a checkpoint written by :meth:`save_pretrained` (never unpickles).

        The model is built from the file's config, or from ``config`` (then checked against the
        weights: one ValueError names every missing, unexpected and mis-shaped tensor)."""
        metadata = read_metadata(path)
        if config is None:
            config = WorldModelConfig.from_dict(metadata["config"])
        model = cls(
            config,
            action_mean=np.asarray(metadata["action_mean"]),
            action_std=np.asarray(metadata["action_std"]),
            tokenizer_vae_config=metadata.get("tokenizer_vae_config"),
            load_backbone_weights=False,
        )
        inference_only = metadata.get("inference_only", False)
        state = read_weights(path, model.state_dict(), inference_only)
        model.load_state_dict(state, strict=not inference_only)
        return model.to(device).eval()
