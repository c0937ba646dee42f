"""Inference precision (bf16 autocast) and CUDA-graph replay of the sampler
(``WorldModel.set_inference``, ``world_model/cuda_graphs.py``, the env's ``precision`` /
``cuda_graphs``). The graph tests need a CUDA device and are skipped without one; the device
check script (benchmarks/gpu_wave2.sh) runs them on the lent GPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from dexac_env.world_core import WorldEnvConfig
from tests.wm_helpers import fake_semantic, gap_actions, latents, tiny_model, wake
from world_model import facade
from world_model.cuda_graphs import CudaGraphCache

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _inputs(model, batch: int, device="cpu"):
    cfg = model.config
    context = latents(model, batch, cfg.context_frames).to(device)
    actions = gap_actions(batch, cfg.action_rows).to(device)
    return context, actions, fake_semantic(model, batch).to(device)


def _predict(model, context, actions, semantic, seeds, steps=3, cfg_scale=None):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return model.predict(context, actions, semantic, generator=generators, num_steps=steps,
                         cfg_scale=cfg_scale)


def test_bf16_predict_and_decode_stay_close_to_fp32_and_float32():
    model = tiny_model(sampler={"context_noise": 0.1})
    wake(model)
    context, actions, semantic = _inputs(model, 2)
    full = _predict(model, context, actions, semantic, [1, 2])
    model.set_inference("bf16")
    half = _predict(model, context, actions, semantic, [1, 2])
    assert half.dtype == torch.float32  # the sampler's state stays float32
    assert torch.isfinite(half).all()
    assert not torch.equal(half, full)  # bf16 did run
    error = (half - full).norm() / full.norm()
    assert error < 0.05, f"bf16 relative error {error:.3f}"
    frames = model.decode(half[:, :1])
    assert frames.dtype == torch.uint8
    model.set_inference("fp32")
    assert torch.equal(_predict(model, context, actions, semantic, [1, 2]), full)


def test_bf16_on_a_cpu_without_bf16_units_warns(monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(facade, "cpu_has_bf16_matmul", lambda: False)
    with pytest.warns(RuntimeWarning, match="without bf16 matmul units"):
        model.set_inference("bf16")
    assert model.precision == "bf16"  # a warning, not a refusal
    monkeypatch.setattr(facade, "cpu_has_bf16_matmul", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.set_inference("bf16")
        model.set_inference("fp32")
    monkeypatch.setattr(facade, "cpu_has_bf16_matmul", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.set_inference("fp32")  # fp32 never warns


def test_cpu_bf16_check_reads_torch(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert facade.cpu_has_bf16_matmul() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert facade.cpu_has_bf16_matmul() is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert facade.cpu_has_bf16_matmul() is False


def test_inference_options_are_checked():
    model = tiny_model()
    with pytest.raises(ValueError, match="precision"):
        model.set_inference("fp16")
    with pytest.raises(ValueError, match="CUDA device"):
        model.set_inference(cuda_graphs=True)
    with pytest.raises(ValueError, match="precision"):
        WorldEnvConfig(precision="half")
    with pytest.raises(ValueError, match="CUDA device"):
        WorldEnvConfig(cuda_graphs=True)
    with pytest.raises(ValueError, match="True or False"):
        WorldEnvConfig(cuda_graphs="yes")
    with pytest.raises(ValueError, match="CUDA device"):
        CudaGraphCache(lambda x: x + 1)(torch.zeros(2))


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_replay_matches_eager_predict_per_batch_size(precision):
    model = tiny_model(sampler={"context_noise": 0.1}).cuda()
    wake(model)
    model.set_inference(precision)
    for batch, seeds in ((1, [4]), (3, [1, 2, 3]), (3, [7, 8, 9])):
        context, actions, semantic = _inputs(model, batch, "cuda")
        eager = _predict(model, context, actions, semantic, seeds)
        model.set_inference(precision, cuda_graphs=True)
        replayed = _predict(model, context, actions, semantic, seeds)
        model.set_inference(precision)  # graphs off, for the next eager reference
        torch.testing.assert_close(replayed, eager, atol=1e-3, rtol=1e-3)
    # guidance doubles the network's batch inside the graph
    context, actions, semantic = _inputs(model, 2, "cuda")
    eager = _predict(model, context, actions, semantic, [1, 2], cfg_scale=2.0)
    model.set_inference(precision, cuda_graphs=True)
    graphed = _predict(model, context, actions, semantic, [1, 2], cfg_scale=2.0)
    torch.testing.assert_close(graphed, eager, atol=1e-3, rtol=1e-3)


@cuda
def test_graph_cache_captures_once_per_signature_and_reads_new_inputs():
    weight = torch.randn(8, 8, device="cuda")
    cache = CudaGraphCache(lambda x, k: torch.tanh(x @ weight) * k)
    a, b = torch.randn(4, 8, device="cuda"), torch.randn(4, 8, device="cuda")
    torch.testing.assert_close(cache(a, 2.0), torch.tanh(a @ weight) * 2.0)
    torch.testing.assert_close(cache(b, 2.0), torch.tanh(b @ weight) * 2.0)  # replay, new input
    assert len(cache) == 1
    cache(torch.randn(5, 8, device="cuda"), 2.0)
    cache(a, 3.0)
    assert len(cache) == 3


@cuda
def test_world_env_steps_with_graphs_as_without(tmp_path):
    from dexac_env.world_env import DexACWorldEnv
    from tests.test_world_env import make_store

    store = str(make_store(tmp_path / "s.zarr", episodes=2, length=16))
    model = tiny_model(semantic=False).cuda()  # no text encoder weights needed on the GPU box
    wake(model)
    outputs = []
    for graphs in (False, True):
        env = DexACWorldEnv(checkpoint=model, store=store, obs_mode="latent", device="cuda",
                            cuda_graphs=graphs, sampling_steps=2)
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            obs, *_ = env.step(env.core.pose[0].astype("float32"))
        outputs.append(obs)
    torch.testing.assert_close(torch.as_tensor(outputs[1]), torch.as_tensor(outputs[0]),
                               atol=1e-3, rtol=1e-3)


def test_compile_network_allows_more_compiled_versions_than_dynamos_default():
    """Past dynamo's recompile limit (8 versions of a function's code, shared by every model
    in the process) the network would run eagerly without a word; E24's benchmark passed it
    with 2 precisions x 2 batch sizes. Wrapping compiles nothing yet, so this is instant."""
    import torch._dynamo.config as dynamo_config

    saved = dynamo_config.recompile_limit
    try:
        dynamo_config.recompile_limit = 8
        tiny_model().compile_network()
        assert dynamo_config.recompile_limit >= 64
    finally:
        dynamo_config.recompile_limit = saved


def test_frozen_compile_asks_inductor_for_freezing():
    """``compile_network(freeze=True)`` (the env's ``compile="frozen"``) passes TorchInductor's
    ``freezing`` option and keeps the caller's other options; a plain compile does not freeze.
    Nothing is compiled here (the wrapper is replaced)."""
    model, calls = tiny_model(), []
    model.dit.compile = lambda **kwargs: calls.append(kwargs)
    model.compile_network(freeze=True, options={"max_autotune": False})
    model.compile_network()
    assert calls[0] == {"dynamic": False, "options": {"max_autotune": False, "freezing": True}}
    assert calls[1] == {"dynamic": False}
