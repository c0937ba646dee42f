"""Replay a pure tensor function as CUDA graphs, one captured per input signature.

An imagined env step of the tiny world model is a few hundred small kernels (two sampler steps
of an 8-block DiT); on a GPU their launches, not their arithmetic, set the step time up to a few
hundred envs (README, Benchmarks). A CUDA graph replays the whole sequence with one launch.

``torch.compile(mode="reduce-overhead")`` does the same and more, but compiles for tens of
seconds per batch size; capturing the eager kernels takes milliseconds, which is what an env
that changes its batch size (a planner's branches, a vector env of another size) needs. This is
the capture recipe of PyTorch's CUDA-graph notes (warm up on a side stream, capture into
static buffers, copy inputs in and the output out), keyed by the inputs' shapes.

The function must be capturable: tensor work only, on one CUDA device, with no host sync and no
host-to-device copy inside (``WorldModel._integrate`` is written so: its noise is drawn before,
its schedule cached before). Its output must be one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]  # static buffers, in the flattened arguments' order
    output: torch.Tensor


def _signature(leaves: list[Any]) -> tuple:
    """What a captured graph is fixed to: every tensor's shape, dtype and device, every other
    leaf's value (ints, floats, None)."""
    return tuple(
        (tuple(leaf.shape), leaf.dtype, str(leaf.device)) if isinstance(leaf, torch.Tensor)
        else ("value", leaf)
        for leaf in leaves
    )


class CudaGraphCache:
    """``cache(*args)`` == ``fn(*args)`` (up to the kernels' own nondeterminism), replayed from
    a CUDA graph captured on the first call with each signature. ``args`` may nest tensors in
    lists, tuples and dicts; ``key`` adds anything else the function's kernels depend on (for
    example whether autocast is on)."""

    def __init__(self, fn: Callable[..., torch.Tensor], warmup: int = 2) -> None:
        self.fn, self.warmup = fn, int(warmup)
        self.graphs: dict[Hashable, _Captured] = {}

    def __len__(self) -> int:
        return len(self.graphs)

    def __call__(self, *args: Any, key: Hashable = None) -> torch.Tensor:
        leaves, spec = pytree.tree_flatten(args)
        tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        if not tensors or any(t.device.type != "cuda" for t in tensors):
            raise ValueError("CUDA graphs need every tensor argument on a CUDA device")
        signature = (key, str(spec), _signature(leaves))
        captured = self.graphs.get(signature)
        if captured is None:
            captured = self.graphs[signature] = self._capture(leaves, spec)
        for static, value in zip(captured.inputs, tensors, strict=True):
            static.copy_(value)
        captured.graph.replay()
        return captured.output.clone()

    def _capture(self, leaves: list[Any], spec: Any) -> _Captured:
        static = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        args = pytree.tree_unflatten(static, spec)
        # warm-up on a side stream: lazy initialisation (cuBLAS handles, caches the function
        # fills on first use) must happen before capture, not in it
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.fn(*args)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"a graphed function must return one tensor, got {type(output)}")
        inputs = [leaf for leaf in static if isinstance(leaf, torch.Tensor)]
        return _Captured(graph=graph, inputs=inputs, output=output)
