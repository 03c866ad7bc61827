"""ResNet in the VGGFace2 (Caffe-converted) variant, with named endpoints.

Seed 001 encodes every frame with the VGGFace2 ResNet-50. The published weights
come from Caffe and were ported to PyTorch as ``resnet50_ft``; that port differs
from torchvision's ResNet in ways that change every activation, so this module
reproduces it exactly:

* the stride of a bottleneck sits on its first 1x1 convolution, not on the 3x3;
* the stem max-pool is 3x3 / 2 with no padding and ``ceil_mode=True``;
* BatchNorm has eps 1e-5 and updates its running variance with the unbiased
  batch variance, as PyTorch does (Flax's ``nn.BatchNorm`` uses the biased one);
* inputs are BGR in [0, 255] minus the VGGFace2 mean (``vggface2_preprocess``).

The one deliberate generalisation: ``resnet50_ft`` ends with ``AvgPool2d(7)``,
which is a global average only at 224x224 input; here it is a global average
at any input size.

SE-ResNet-50 (``senet50_ft``, ``SENet50``) follows ``models/senet.py`` of the same
PyTorch port (github.com/cydonia999/VGGFace2-pytorch): the network is
``resnet50_ft`` (same stem, strides, downsample, keys) plus, in every bottleneck,
a squeeze-excitation on the output of ``bn3``: average pool -> 1x1 conv ``conv4``
(C -> C // 16, with bias) -> ReLU -> 1x1 conv ``conv5`` (C // 16 -> C, with bias)
-> sigmoid, which scales ``bn3``'s output *before* the residual is added
(``relu(se * out + residual)``). The port pools with ``avg_pool2d(kernel_size=H)``,
a global average for square maps; here it is a global average at any size. Its
unused ``SEModule`` (``se_block``) has no weights in the published state dict.

The forward pass is a flat sequence of named stages (``ResNet.endpoint_names``)
so that a frozen prefix can be run once and cached (``stop_at``), the trainable
suffix run from a cached endpoint (``start_at``), and Grad-CAM taken at any
endpoint: ``ResNet`` is a ``merjax.models.backbones.Backbone``, registered as
``config.model.backbone.name='resnet'`` (keys ``stage_sizes``, ``width``,
``se_reduction``: 0 = ResNet, 16 = SE-ResNet) with the VGGFace2 weight importer.
"""

from __future__ import annotations

import functools
import re
from os import PathLike
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from merjax.models import registry
from merjax.models.backbones import Stage, run_stages

VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)
EXPANSION = 4


def vggface2_preprocess(frames: jax.Array) -> jax.Array:
    """Turns RGB frames in [0, 255] (uint8 or float, any leading dims) into VGGFace2 input.

    Returns float32 BGR with the VGGFace2 mean subtracted per channel.
    """
    bgr = jnp.flip(jnp.asarray(frames, jnp.float32), axis=-1)
    return bgr - jnp.asarray(VGGFACE2_MEAN_BGR, jnp.float32)


class BatchNorm(nn.Module):
    """BatchNorm over all but the last axis with PyTorch semantics.

    Normalises with the biased batch variance in training and updates the running
    variance with the unbiased one, like ``torch.nn.BatchNorm2d``; statistics are
    computed in float32 whatever ``dtype`` is. Variables mirror Flax's BatchNorm:
    params ``scale``/``bias``, batch_stats ``mean``/``var``.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        running_mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        running_var = self.variable(
            "batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        x = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.var(x, axes)
            if not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
                running_var.value = self.momentum * running_var.value + (1 - self.momentum) * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        y = (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
        return y.astype(self.dtype)


class Conv3x3(nn.Module):
    """3x3 convolution, stride 1, padding 1, no bias: ``nn.Conv`` with the same parameter.

    On maps smaller than the kernel (layer4's 2x2 maps at 48-64 pixel input) XLA:CPU's
    convolution takes a slow path, ~100x slower than the same arithmetic as a matrix
    product (1.26 s vs 0.013 s forward for 104 maps of 2x2x512, measured on this
    project's CPU); there the convolution is computed from the nine shifted copies
    of the padded map (im2col), which gives the same result.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features),
                            jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        height, width = x.shape[1:3]
        if min(height, width) >= 3:
            return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        shifted = [padded[:, i:i + height, j:j + width, :] for i in range(3) for j in range(3)]
        return jnp.concatenate(shifted, axis=-1) @ kernel.reshape(-1, self.features)


class Bottleneck(nn.Module):
    """Bottleneck block of ``resnet50_ft``: 1x1 (stride) -> 3x3 -> 1x1 (x4), residual.

    With ``se_reduction`` set it is the ``senet50_ft`` block: a squeeze-excitation
    (``conv4`` down by ``se_reduction``, ReLU, ``conv5`` up, sigmoid) scales the
    block's output before the residual add.
    """

    features: int
    stride: int = 1
    downsample: bool = False
    se_reduction: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = functools.partial(BatchNorm, dtype=self.dtype)
        strides = (self.stride, self.stride)
        y = conv(self.features, (1, 1), strides, padding="VALID", name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y, train=train))
        y = Conv3x3(self.features, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y, train=train))
        y = conv(self.features * EXPANSION, (1, 1), padding="VALID", name="conv3")(y)
        y = norm(name="bn3")(y, train=train)
        if self.se_reduction is not None:
            channels = self.features * EXPANSION
            se = jnp.mean(y, axis=(1, 2), keepdims=True)
            se = nn.relu(nn.Conv(channels // self.se_reduction, (1, 1), dtype=self.dtype,
                                 name="conv4")(se))
            se = nn.sigmoid(nn.Conv(channels, (1, 1), dtype=self.dtype, name="conv5")(se))
            y = y * se
        if self.downsample:
            x = conv(self.features * EXPANSION, (1, 1), strides, padding="VALID",
                     name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x, train=train)
        return nn.relu(y + x)


def max_pool_ceil(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
    """Max-pool [B,H,W,C] with no padding and PyTorch ``ceil_mode=True``.

    Output size is ceil((size - window) / stride) + 1; the windows that run past the
    bottom/right edge see -inf there (PyTorch's semantics for padding 0).
    """
    def extra(size: int) -> int:
        out = -(-(size - window) // stride) + 1
        return (out - 1) * stride + window - size

    pad = ((0, extra(x.shape[1])), (0, extra(x.shape[2])))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pad)


class ResNet(nn.Module):
    """VGGFace2-variant ResNet on preprocessed channels-last input [B,H,W,3].

    Submodule names mirror the PyTorch state-dict keys (``conv1``, ``bn1``,
    ``layer1_0`` ... for ``layer1.0`` ..., ``fc``) so weight import is mechanical.
    ``se_reduction`` (None: plain ResNet) adds the ``senet50_ft`` squeeze-excitation
    (``conv4``/``conv5``) to every bottleneck.

    ``__call__`` returns ``(output, endpoints)``: output is the logits when
    ``num_classes`` is set, else the pooled features [B, 32*width] (for four stages); endpoints maps
    every computed stage name in ``endpoint_names`` to its output. ``start_at=E``
    takes ``x`` to be endpoint E's tensor and runs the stages after it (none when
    E is the last: the whole backbone is frozen and cached);
    ``stop_at=E`` stops after E and returns E's tensor as output
    (``merjax.models.backbones.run_stages``). Its input is ``preprocess(frames)``.

    ``frozen_until=E`` freezes the prefix up to and including E (seed 001 freezes
    the layers before l_s): those stages run with BatchNorm on running statistics
    and their output is cut from the gradient, so only later stages learn. The
    prefix can then be computed once and cached (``stop_at=E``) and the rest run
    from the cache (``start_at=E``) with the same result.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    num_classes: int | None = None
    se_reduction: int | None = None
    frozen_until: str | None = None
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.conv1 = nn.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
                             use_bias=False, dtype=self.dtype)
        self.bn1 = BatchNorm(dtype=self.dtype)
        for s, size in enumerate(self.stage_sizes):
            blocks = [
                Bottleneck(self.width * 2**s, stride=2 if s > 0 and i == 0 else 1,
                           downsample=i == 0, se_reduction=self.se_reduction,
                           dtype=self.dtype)
                for i in range(size)
            ]
            setattr(self, f"layer{s + 1}", blocks)  # named layer{s+1}_{i}
        if self.num_classes is not None:
            self.fc = nn.Dense(self.num_classes, dtype=self.dtype)

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        """Stage names in forward order."""
        layers = tuple(f"layer{s + 1}" for s in range(len(self.stage_sizes)))
        head = ("logits",) if self.num_classes is not None else ()
        return ("conv1", "pool1", *layers, "pooled", *head)

    @property
    def spatial_endpoint_names(self) -> tuple[str, ...]:
        """The endpoints with a spatial map: all but the global average and the logits."""
        return tuple(name for name in self.endpoint_names if name not in ("pooled", "logits"))

    @nn.nowrap
    def preprocess(self, frames: jax.Array) -> jax.Array:
        """RGB frames in [0, 255] -> VGGFace2 input (``vggface2_preprocess``)."""
        return vggface2_preprocess(frames)

    @nn.nowrap
    def endpoint_of_param(self, path: tuple[str, ...]) -> str:
        """The endpoint a parameter belongs to, by its top-level submodule (``('layer2_3', ...)`` -> ``'layer2'``).

        Used to freeze every parameter up to an endpoint.
        """
        module = path[0]
        if module in ("conv1", "bn1"):
            return "conv1"
        if module == "fc":
            return "logits"
        match = re.fullmatch(r"(layer\d+)_\d+", module)
        if match is None:
            raise ValueError(f"{module!r} is not a ResNet submodule")
        return match.group(1)

    def _stages(self) -> list[Stage]:
        """``(endpoint name, fn(x, train))`` in forward order."""
        def stage(blocks: Sequence[Bottleneck]) -> Callable[..., jax.Array]:
            def run(x: jax.Array, train: bool) -> jax.Array:
                for block in blocks:
                    x = block(x, train=train)
                return x
            return run

        stages = [
            ("conv1", lambda x, train: nn.relu(self.bn1(self.conv1(x), train=train))),
            ("pool1", lambda x, train: max_pool_ceil(x)),
        ]
        stages += [(f"layer{s + 1}", stage(getattr(self, f"layer{s + 1}")))
                   for s in range(len(self.stage_sizes))]
        stages.append(("pooled", lambda x, train: jnp.mean(x, axis=(1, 2))))
        if self.num_classes is not None:
            stages.append(("logits", lambda x, train: self.fc(x)))
        return stages

    def __call__(self, x: jax.Array, *, train: bool, start_at: str | None = None,
                 stop_at: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        return run_stages(self._stages(), x, train=train, start_at=start_at, stop_at=stop_at,
                          frozen_until=self.frozen_until, dtype=self.dtype)


ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
SENet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), se_reduction=16)


def import_weights(variables: dict[str, Any], path: str | PathLike[str],
                   config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``resnet`` backbone's weight importer: a merjax backbone file (``.msgpack`` with its ``.json``
    description, e.g. from ``python -m experiments.pretrain``; ``merjax.weights.backbone.import_merjax_backbone``)
    or VGGFace2 ``resnet50_ft`` (``senet50_ft`` with ``se_reduction``) from a pickle or Keras ``.h5``
    (``merjax.weights.backbone.import_vggface2``)."""
    from merjax.weights import backbone  # merjax.weights imports this module

    if str(path).endswith(backbone.MERJAX_SUFFIX):
        return backbone.import_merjax_backbone(variables, path, config)
    return backbone.import_vggface2(variables, path, se=bool(config.get("se_reduction", 0)))


@registry.register_backbone("resnet", import_weights=import_weights)
def resnet(config: Mapping[str, Any], *, dtype: Any, frozen_until: str | None) -> ResNet:
    """``config.model.backbone``: ``stage_sizes`` (ResNet-50: (3, 4, 6, 3)), ``width`` (64 as published),
    ``se_reduction`` (optional; 0: ResNet, 16: the VGGFace2 SE-ResNet-50)."""
    return ResNet(stage_sizes=tuple(config["stage_sizes"]), width=int(config["width"]),
                  se_reduction=int(config.get("se_reduction", 0)) or None, frozen_until=frozen_until, dtype=dtype)
