"""The backbone interface: what the engine, the prefix cache, freezing, Grad-CAM and weight import rely on.

A backbone is a Flax module that encodes one frame (or any image) through a
flat sequence of named stages, its *endpoints* (ResNet: ``conv1``, ``pool1``,
``layer1`` .. ``layer4``, ``pooled``; a VGG- or AlexNet-like network would be
``conv1`` .. ``conv5``, ``fc6``, ``fc7``). Being flat and named is what lets one
engine

* freeze a prefix up to an endpoint (``frozen_until``) and update only the rest
  (``optim.frozen_mask`` asks ``endpoint_of_param`` which stage a parameter
  belongs to);
* compute that frozen prefix once per frame and cache it (``stop_at``), then
  run the trainable rest from the cache (``start_at``) with the same result;
* take Grad-CAM at any spatial endpoint (the network split at that endpoint);
* import published weights into it (the importer registered with it in
  ``merjax.models.registry``).

``Backbone`` spells the interface out; ``run_stages`` implements the
start/stop/freeze semantics once, so a new backbone lists its stages and calls
it (see ``ResNet.__call__``). A backbone is registered by name in
``merjax.models.registry`` (one decorator in its own file).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import jax

Stage = tuple[str, Callable[[jax.Array, bool], jax.Array]]   # (endpoint name, fn(x, train) -> x)


class Backbone(Protocol):
    """What every backbone module provides (a ``flax.linen.Module`` with these members).

    Attributes:
      frozen_until: the last frozen endpoint, or None. Stages up to and including
        it run with BatchNorm (if any) on running statistics and their output is
        cut from the gradient, so only later stages learn.
      dtype: the compute dtype of the stages; endpoint tensors fed back in through
        ``start_at`` are cast to it.
    """

    frozen_until: str | None
    dtype: Any

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        """Every endpoint, in forward order. The last one's output is what ``__call__`` returns."""

    @property
    def spatial_endpoint_names(self) -> tuple[str, ...]:
        """The endpoints whose output is a channels-last map [B,h,w,C] (where Grad-CAM can be taken)."""

    def __call__(self, x: jax.Array, *, train: bool, start_at: str | None = None,
                 stop_at: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``(output, endpoints)`` of preprocessed input ``x`` [B,H,W,3].

        ``start_at=E``: ``x`` is endpoint E's output and only the stages after E
        run (none when E is the last endpoint). ``stop_at=E``: stop after E and
        return E's output. ``endpoints`` maps every stage that ran to its output.
        """

    def preprocess(self, frames: jax.Array) -> jax.Array:
        """RGB frames [..., H, W, 3] with pixels in [0, 255] (uint8 or float) -> this network's input."""

    def endpoint_of_param(self, path: tuple[str, ...]) -> str:
        """The endpoint whose stage owns the parameter at ``path`` (keys inside the backbone's params)."""


def run_stages(stages: Sequence[Stage], x: jax.Array, *, train: bool, start_at: str | None,
               stop_at: str | None, frozen_until: str | None,
               dtype: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs ``stages`` (a backbone's ``(endpoint, fn(x, train))`` in forward order) as ``Backbone.__call__`` says.

    Raises:
      ValueError: naming the endpoint, if ``start_at``, ``stop_at`` or ``frozen_until``
        is not one of the stages, or ``stop_at`` comes before what ``start_at`` leaves to run.
    """
    names = tuple(name for name, _ in stages)
    for endpoint in (start_at, stop_at, frozen_until):
        if endpoint is not None and endpoint not in names:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {names}")
    first = 0 if start_at is None else names.index(start_at) + 1
    last = len(names) if stop_at is None else names.index(stop_at) + 1
    if first >= last and stop_at is not None:
        raise ValueError(f"nothing to run from start_at={start_at!r} to stop_at={stop_at!r}")
    frozen = -1 if frozen_until is None else names.index(frozen_until)
    if start_at is not None:
        x = x.astype(dtype)
    endpoints = {} if start_at is None else {start_at: x}
    for index, (name, run) in enumerate(stages[first:last], start=first):
        x = run(x, train and index > frozen)
        if index == frozen:
            x = jax.lax.stop_gradient(x)
        endpoints[name] = x
    return x, endpoints
