"""Seed 002's networks: one CNN per face region (stage 1) and one LSTM per region over its features (stage 2).

Seed 002 crops six regions from every frame (``merjax.faces.regions``, template
``seed002``; clip op ``crop_regions``, streams ``region_<name>``), trains one
CNN per region on single frames with region labels (the clip's class where the
region takes part in it, "not me" elsewhere), cuts each CNN's classification
layer off and feeds its 20-d per-frame features to one LSTM per region; the six
LSTM outputs are classified together.

Stage 1, ``RegionFrameClassifier`` (``config.model.name='region_cnn'``)
  The six region crops of one frame, keyword inputs ``region_<name>`` [B,h,w,3]
  (pixels in [0, 255]; regions may differ in size) -> ``RegionCNNs`` -> one dense
  layer per region over the region's classes -> ``{target: logits [B,R,C]}``,
  ``target`` = ``config.model.target``, the name of the region-label target the
  stage trains on (default ``'region_labels_emotion'``, ``merjax.data.targets``;
  ``'region_labels_action_units'`` for the AU table), R = 6 regions in the
  template's order, C = classes per region (the builder's ``num_classes``: the
  target's, the clip's classes and "not me", 4 on the composite, the seed's
  "dense layer with 4 neurons"). The region labels are targets [B,R] in the same
  column order (``merjax.data.region_labels``), so predictions [B,R] and targets
  meet elementwise in ``merjax.train.losses``: the loss is the mean over frames
  and regions, with per-column class weights (``losses.class_weights`` of [n,R]
  values gives a [R,C] table, ``sample_weights`` a [B,R] weight) and masks
  [B,R]. Training the six networks in one module on that loss is training each
  on its own loss: they share no parameter, so each one's gradient is its own
  loss's times one common factor (1/R under the mean), which Adam's
  normalisation removes (up to its epsilon); global-norm gradient clipping
  (``train.grad_clip``) would couple them and is best left off.

Stage 2, ``RegionClipClassifier`` (``'region_lstm'``)
  A clip's region crops [B,T,h,w,3] and ``mask`` [B,T] -> the (frozen) region
  CNNs per frame -> features [B,T,R,20] -> one LSTM(120) per region, dropout 0.2
  on its output -> the R outputs concatenated -> dense 64, LeakyReLU -> dense
  classes (logits [B,C]). With ``input_endpoint='features'`` it takes the cached
  features ``features`` [B,T,R,20] instead of the crops, the way
  ``ClipClassifier`` takes a cached prefix: the engine computes stage 1's
  features of every frame once per fold (``frame_features``) and trains only the
  LSTMs and the head on them. Both variants have the same variables (the CNNs'
  are simply unused on cached features), and the CNNs sit under ``backbone`` in
  both models, so stage 2 starts from stage 1 with ``init.include=('backbone',)``
  (the region heads, "removed after training", are not in stage 2).

Padding: the seed pads every feature sequence to 500 steps with zeros at the end
and reads the LSTM's output after step 500, so the zeros run through the
recurrence and change the result (Keras 2.2.4 without a ``Masking`` layer).
merjax masks instead: clips are left-aligned and padded at the end, ``mask`` is
True on real frames, and each LSTM's output is its state at the clip's last real
frame (``merjax.models.recurrent.LSTMStack``), equal to running the unpadded
clip; padded steps reach neither the outputs nor the gradients.

Parameter count (``parameter_counts``): at the seed's crop sizes, 3 classes and
4 per region, six CNNs 640,008 + six region heads 504 + six LSTMs 406,080 +
dense 64 and dense 3 46,339 = 1,092,931 on RGB crops. The seed's "1.093.531
parameters to train the networks" is both stages, heads included, with a
4-channel first convolution: 600 = 6 x 5x5x1x4 more weights (no other one-size
change gives 600: a fifth class per region adds 126, a 21st feature 9,054). Most likely its crops were
read as RGBA (PNG files opened with PIL keep their alpha channel, and the
group's code reads crops with ``np.array(Image.open(...))``) -- an inference.
The count does not depend on the crop size (the pooling is global), so a black
canvas around the crops, as the seed uses to give every database's crops one
size, changes the activations (black enters the average) but not the count.

Choices where the seed is silent (it names Keras 2.2.4, so Keras's defaults
stand in for what it does not say), each for the reason given:

* Convolutions use ``'same'`` padding and 2x2 max-pools of stride 2 with
  ``'same'`` padding (a last odd row or column pooled alone, i.e. torch's
  ``ceil_mode=True``): the four parallel convolutions must keep the spatial size
  to be concatenated with the second convolution's output, and the group's
  follow-up code (``CNN_SE.py`` of MouathAb/AnalyseMiE-CNN_LSTM_SE) pads every
  convolution and pool this way.
* The parallel convolutions read the second convolution's output after its
  max-pool, and that pooled output is what they are concatenated with (the only
  tensor of "the second convolution" with their spatial size), first, then the
  1x1, 3x3, 5x5 and 7x7 outputs: 8 + 4 x 16 = 72 channels.
* The average pooling is global: the seed's parameter count (1,093,531, see
  ``parameter_counts``) leaves room for 72 inputs to the 1024-unit layer and no
  more; any pooling that left h x w > 1 positions would add 72 x 1024 parameters
  per extra position and region (the smallest map at the seed's sizes is 15 x 15).
* ReLU after every convolution and after the 1024- and 20-unit layers (the seed:
  "Rectified Linear Unit as an activation function for all previous layers"), so
  the 20-d features are non-negative.
* Pixels are scaled to [-1, 1] (x / 127.5 - 1), as the follow-up code does.
* Kernels start from Glorot-uniform and biases from zero (Keras's defaults); the
  LSTMs are merjax's ``LSTMStack`` (sigmoid gates, Flax's initialisers), where
  Keras 2.2.4's LSTM used hard-sigmoid gates and a forget-gate bias of 1.
* LeakyReLU's slope is 0.3, Keras's default ``alpha`` (Flax's is 0.01).
* Each of the six CNNs is its own submodule, named by its region, not one
  network vmapped over a region axis: the template's crops differ in size
  (100x80 ... 160x60), and six networks take them as they are.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from merjax.data.clip_ops import region_stream
from merjax.faces import regions as face_regions
from merjax.models import registry
from merjax.models.recurrent import LSTMStack

FEATURES = "features"                      # the one endpoint of the region CNNs: their 20-d spatial features
KERNEL_INIT = nn.initializers.xavier_uniform()   # Keras's default glorot_uniform (biases: zeros, Flax's default)
SEED_PARAMETERS = 1_093_531                # seed 002 §5: "about 1M (1.093.531) parameters to train the networks"


def _max_pool(x: jax.Array) -> jax.Array:
    """2x2 max-pool of stride 2, 'same' padding: an odd last row/column is pooled alone (torch ceil_mode)."""
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class RegionCNN(nn.Module):
    """One region's network up to its spatial features (seed 002 §3.2, Fig. 4, §4.1.2): [N,H,W,C] -> [N,20].

    conv 4@5x5 -> max-pool -> conv 8@3x3 -> max-pool -> {that, conv 16@1x1, 16@3x3,
    16@5x5, 16@7x7} concatenated (72 channels) -> global average -> dense 1024 ->
    dropout -> dense 20 (``features``); ReLU after every layer. The region's
    classification layer is ``RegionFrameClassifier``'s head. Input: preprocessed
    crops (``RegionCNNs.preprocess``).
    """

    hidden: int = 1024
    features: int = 20
    dropout: float = 0.2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(nn.Conv, padding="SAME", kernel_init=KERNEL_INIT, dtype=self.dtype)
        dense = functools.partial(nn.Dense, kernel_init=KERNEL_INIT, dtype=self.dtype)
        x = _max_pool(nn.relu(conv(4, (5, 5), name="conv1")(x)))
        x = _max_pool(nn.relu(conv(8, (3, 3), name="conv2")(x)))
        branches = [nn.relu(conv(16, (size, size), name=f"conv3_{size}x{size}")(x)) for size in (1, 3, 5, 7)]
        x = jnp.mean(jnp.concatenate([x, *branches], axis=-1), axis=(1, 2))
        x = nn.relu(dense(self.hidden, name="fc1")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.relu(dense(self.features, name="fc2")(x))


class RegionCNNs(nn.Module):
    """One ``RegionCNN`` per region (submodules named by region): crops [N,h_r,w_r,C] in region order ->
    features [N,R,20] float32.

    The two region models hold it as their ``backbone``. Its one endpoint is
    ``features``: ``frozen_until='features'`` runs every CNN in eval mode (no
    dropout) and cuts its output from the gradient, and ``endpoint_of_param`` lets
    ``merjax.train.optim.frozen_mask(params, 'features', model.backbone)`` keep the
    optimiser (e.g. weight decay) off the CNNs.
    """

    regions: tuple[str, ...]
    hidden: int = 1024
    features: int = 20
    dropout: float = 0.2
    frozen_until: str | None = None
    dtype: Any = jnp.float32

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        return (FEATURES,)

    @nn.nowrap
    def endpoint_of_param(self, path: tuple[str, ...]) -> str:
        del path
        return FEATURES

    @nn.nowrap
    def preprocess(self, pixels: jax.Array) -> jax.Array:
        """Pixels in [0, 255] (uint8 or float) -> [-1, 1] in the compute dtype."""
        return (jnp.asarray(pixels, jnp.float32) / 127.5 - 1.0).astype(self.dtype)

    @nn.compact
    def __call__(self, crops: Sequence[jax.Array], *, train: bool) -> jax.Array:
        if len(crops) != len(self.regions):
            raise ValueError(f"RegionCNNs of {len(self.regions)} regions {self.regions} got {len(crops)} crops")
        frozen = self.frozen_until == FEATURES
        features = jnp.stack([
            RegionCNN(hidden=self.hidden, features=self.features, dropout=self.dropout, dtype=self.dtype,
                      name=region)(crop, train=train and not frozen)
            for region, crop in zip(self.regions, crops)], axis=1).astype(jnp.float32)
        return jax.lax.stop_gradient(features) if frozen else features


def _region_crops(model: nn.Module, streams: Mapping[str, jax.Array]) -> list[jax.Array]:
    """The crops in region order from keyword inputs ``region_<name>``; refuses missing or unknown streams."""
    expected = tuple(region_stream(region) for region in model.backbone.regions)
    if set(streams) != set(expected):
        raise ValueError(f"{type(model).__name__} takes the region streams {expected} as keyword inputs, "
                         f"got {tuple(sorted(streams))}")
    return [model.backbone.preprocess(streams[name]) for name in expected]


def _frame_features(model: nn.Module, endpoint: str, streams: Mapping[str, jax.Array]) -> jax.Array:
    """Region crops of frames [N,h,w,3] each -> the CNNs' features [N,R,20], in eval mode."""
    if endpoint != FEATURES:
        raise ValueError(f"unknown endpoint {endpoint!r} of the region CNNs; expected {FEATURES!r}")
    return model.backbone(_region_crops(model, streams), train=False)


class RegionFrameClassifier(nn.Module):
    """Stage 1: one frame's region crops (keyword inputs ``region_<name>`` [B,h,w,3]) ->
    ``{target: logits [B,R,C]}``, one classifier per region over its C classes."""

    backbone: RegionCNNs
    num_classes: int
    target: str = "region_labels_emotion"

    def frame_features(self, endpoint: str = FEATURES, **streams: jax.Array) -> jax.Array:
        """Region crops [N,h,w,3] each -> features [N,R,20] in eval mode (what stage 2 reads)."""
        return _frame_features(self, endpoint, streams)

    @nn.compact
    def __call__(self, *, train: bool, **streams: jax.Array) -> dict[str, jax.Array]:
        features = self.backbone(_region_crops(self, streams), train=train)
        logits = [nn.Dense(self.num_classes, kernel_init=KERNEL_INIT, name=f"head_{region}")(features[:, index])
                  for index, region in enumerate(self.backbone.regions)]
        return {self.target: jnp.stack(logits, axis=1)}


class _RegionLSTM(nn.Module):
    """One region's LSTM over its feature sequence [B,T,D] (``lengths`` [B]) -> its output at the last real
    frame, dropout after it: [B,H]. ``train`` is a field so that ``nn.vmap`` (no keyword arguments) can lift it."""

    hidden: int
    dropout: float
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
        _, final = LSTMStack(self.hidden, name="lstm")(x, lengths, train=self.train)
        return nn.Dropout(self.dropout, deterministic=not self.train)(final)


# The six LSTMs as one scan (their parameters stacked on a leading region axis, drawn independently; dropout
# masks independent per region): features [B,T,R,D] -> [B,R,H].
_RegionLSTMs = nn.vmap(_RegionLSTM, in_axes=(2, None), out_axes=1, variable_axes={"params": 0},
                       split_rngs={"params": True, "dropout": True})


class RegionClipClassifier(nn.Module):
    """Stage 2: a clip's region crops [B,T,h,w,3] (or ``features`` [B,T,R,20] at ``input_endpoint='features'``)
    and ``mask`` [B,T] -> logits [B,C]."""

    backbone: RegionCNNs
    num_classes: int
    lstm_hidden: int = 120
    lstm_dropout: float = 0.2
    head_hidden: int = 64
    leaky_slope: float = 0.3
    input_endpoint: str | None = None

    def frame_features(self, endpoint: str = FEATURES, **streams: jax.Array) -> jax.Array:
        """Region crops [N,h,w,3] each -> features [N,R,20] in eval mode (the cache ``input_endpoint`` reads)."""
        return _frame_features(self, endpoint, streams)

    def encode(self, streams: Mapping[str, jax.Array], *, train: bool) -> jax.Array:
        """Region crops [B,T,h,w,3] each -> features [B,T,R,20], one CNN call per region on B*T frames."""
        crops = _region_crops(self, streams)
        batch_time = crops[0].shape[:2]
        features = self.backbone([crop.reshape((-1,) + crop.shape[2:]) for crop in crops], train=train)
        return features.reshape(batch_time + features.shape[1:])

    @nn.compact
    def __call__(self, mask: jax.Array | None = None, *, features: jax.Array | None = None, train: bool,
                 **streams: jax.Array) -> jax.Array:
        if mask is None:
            raise ValueError("RegionClipClassifier needs `mask` [B,T] (True on the real frames of each clip)")
        if self.input_endpoint is None:
            if features is not None:
                raise ValueError("RegionClipClassifier(input_endpoint=None) takes the region streams, not `features`")
            features = self.encode(streams, train=train)
        elif streams or features is None:
            raise ValueError(f"RegionClipClassifier(input_endpoint={self.input_endpoint!r}) takes `features` "
                             f"[B,T,R,D] only, got {tuple(sorted(streams)) or 'no features'}")
        lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)
        outputs = _RegionLSTMs(hidden=self.lstm_hidden, dropout=self.lstm_dropout, train=train,
                               name="lstms")(features.astype(jnp.float32), lengths)
        x = outputs.reshape(outputs.shape[0], -1)
        x = nn.leaky_relu(nn.Dense(self.head_hidden, kernel_init=KERNEL_INIT, name="fc")(x), self.leaky_slope)
        return nn.Dense(self.num_classes, kernel_init=KERNEL_INIT, name="logits")(x)


def region_cnns(config: Mapping[str, Any], *, frozen_until: str | None) -> RegionCNNs:
    """The six region CNNs of ``config.model``: ``template`` (a ``merjax.faces.regions`` template, default
    ``'seed002'``: its regions, in its order), ``cnn.hidden`` / ``cnn.features`` / ``cnn.dropout`` (defaults
    1024, 20, 0.2: the seed's) and ``dtype``."""
    if frozen_until not in (None, FEATURES):
        raise ValueError(f"cannot freeze until {frozen_until!r}: not an endpoint of the region CNNs ({FEATURES!r},)")
    template = face_regions.get_template(config.get("template", "seed002"))
    cnn = config.get("cnn") or {}
    return RegionCNNs(regions=template.regions, hidden=int(cnn.get("hidden", 1024)),
                      features=int(cnn.get("features", 20)), dropout=float(cnn.get("dropout", 0.2)),
                      frozen_until=frozen_until,
                      dtype=registry.choose(registry.DTYPES, config, "dtype", "--config.model.dtype"))


@registry.register_model("region_cnn")
def region_cnn(config: Mapping[str, Any], num_classes: int, *, frozen_until: str | None,
               input_endpoint: str | None) -> RegionFrameClassifier:
    """Seed 002's stage 1: the region CNNs (``region_cnns``) and a classifier per region over ``num_classes``
    (the region target's classes, "not me" included), predicting ``config.model.target`` (the region-label
    target's name, default 'region_labels_emotion')."""
    if input_endpoint is not None:
        raise ValueError(f"region_cnn takes region crops only (input_endpoint={input_endpoint!r}); its features "
                         f"feed the region_lstm model")
    return RegionFrameClassifier(backbone=region_cnns(config, frozen_until=frozen_until), num_classes=num_classes,
                                 target=str(config.get("target", "region_labels_emotion")))


@registry.register_model("region_lstm")
def region_lstm(config: Mapping[str, Any], num_classes: int, *, frozen_until: str | None,
                input_endpoint: str | None) -> RegionClipClassifier:
    """Seed 002's stage 2: ``config.model.lstm.hidden`` / ``lstm.dropout`` (120, 0.2), ``head.hidden`` /
    ``head.leaky_slope`` (64, 0.3) over the region CNNs (``region_cnns``; frozen by ``frozen_until='features'``,
    as in the seed, which trains the LSTMs on saved features)."""
    if input_endpoint not in (None, FEATURES):
        raise ValueError(f"region_lstm takes region crops or cached {FEATURES!r}, "
                         f"not input_endpoint={input_endpoint!r}")
    lstm, head = config.get("lstm") or {}, config.get("head") or {}
    return RegionClipClassifier(backbone=region_cnns(config, frozen_until=frozen_until), num_classes=num_classes,
                                lstm_hidden=int(lstm.get("hidden", 120)), lstm_dropout=float(lstm.get("dropout", 0.2)),
                                head_hidden=int(head.get("hidden", 64)),
                                leaky_slope=float(head.get("leaky_slope", 0.3)), input_endpoint=input_endpoint)


def _size(tree: Any) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def parameter_counts(config: Mapping[str, Any], num_classes: int, region_classes: int, *,
                     channels: int = 3) -> dict[str, int]:
    """Parameters of both stages of ``config.model`` at its template's crop sizes, by part, and their total.

    Counted on shapes alone (``jax.eval_shape``, no computation). With the seed's
    sizes and 3 classes (4 per region) the total is 1,092,931; ``channels=4``
    gives the seed's 1,093,531 (module docstring).
    """
    template = face_regions.get_template(config.get("template", "seed002"))
    crops = {region_stream(region): jax.ShapeDtypeStruct((1, height, width, channels), jnp.uint8)
             for region, (width, height) in template.sizes.items()}
    cnn_model = region_cnn(config, region_classes, frozen_until=None, input_endpoint=None)
    lstm_model = region_lstm(config, num_classes, frozen_until=None, input_endpoint=None)
    clip = {name: jax.ShapeDtypeStruct((1, 2, *crop.shape[1:]), crop.dtype) for name, crop in crops.items()}
    mask = jax.ShapeDtypeStruct((1, 2), jnp.bool_)
    cnn = jax.eval_shape(lambda inputs: cnn_model.init(jax.random.key(0), train=False, **inputs), crops)["params"]
    lstm = jax.eval_shape(lambda inputs: lstm_model.init(jax.random.key(0), train=False, **inputs),
                          {"mask": mask, **clip})["params"]
    counts = {"region_cnns": _size(cnn["backbone"]),
              "region_heads": _size({k: v for k, v in cnn.items() if k.startswith("head_")}),
              "region_lstms": _size(lstm["lstms"]),
              "fc": _size({k: v for k, v in lstm.items() if k in ("fc", "logits")})}
    return {**counts, "total": sum(counts.values())}
