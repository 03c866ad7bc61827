"""Models and backbones by name: ``create_model(config.model, num_classes)``.

``config.model.name`` picks a model builder from ``MODELS`` and
``config.model.backbone.name`` a backbone from ``BACKBONES``; every other key
of ``config.model`` belongs to the model's builder (seed 001's classifiers:
``merjax.models.classifiers``) and of ``config.model.backbone`` to the
backbone's (ResNet: ``merjax.models.resnet``). ``config.model.dtype``
(``'float32'`` | ``'bfloat16'``) is the backbone's compute dtype.

Adding a network is one registration in its own module, plus importing that
module in ``merjax/models/__init__.py``::

    @registry.register_backbone("vgg19", import_weights=import_vgg19_weights)
    def vgg19(config, *, dtype, frozen_until):            # config = config.model.backbone
        return VGG19(dtype=dtype, frozen_until=frozen_until)

    @registry.register_model("region_cnn")
    def region_cnn(config, num_classes, *, frozen_until, input_endpoint):   # config = config.model
        return RegionCNN(backbone=registry.create_backbone(config, frozen_until=frozen_until), ...)

A backbone follows ``merjax.models.backbones.Backbone``. A model that has one
holds it as its ``backbone`` attribute (so its variables sit under
``'backbone'``, where ``import_backbone_weights`` puts published weights) and,
for the prefix cache and Grad-CAM, offers ``frame_features(frames, endpoint)``
and an ``input_endpoint`` field under which it takes ``features`` instead of
``frames`` (see ``merjax.models.classifiers``).
"""

from __future__ import annotations

import dataclasses
from os import PathLike
from typing import Any, Callable, Mapping, TypeVar

import flax.linen as nn
import jax.numpy as jnp

from merjax.errors import UserError

Variables = dict[str, Any]
# (config.model.backbone, *, dtype, frozen_until) -> the backbone module
BackboneBuilder = Callable[..., nn.Module]
# (the backbone's variables {'params': ..., 'batch_stats': ...}, weight file, config.model.backbone) -> variables
WeightImporter = Callable[[Variables, "str | PathLike[str]", Any], Variables]
# (config.model, num_classes, *, frozen_until, input_endpoint) -> the model module
ModelBuilder = Callable[..., nn.Module]
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its builder and the importer of its published weights (None: none)."""

    build: BackboneBuilder
    import_weights: WeightImporter | None = None


BACKBONES: dict[str, BackboneEntry] = {}
MODELS: dict[str, ModelBuilder] = {}


def register_backbone(name: str, *, import_weights: WeightImporter | None = None) -> Callable[[Builder], Builder]:
    """Decorator: registers a backbone builder (and its weight importer) as ``config.model.backbone.name=name``."""
    def register(build: Builder) -> Builder:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = BackboneEntry(build, import_weights)
        return build
    return register


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: registers a model builder as ``config.model.name=name``."""
    def register(build: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = build
        return build
    return register


def choose(table: Mapping[str, Any], config: Mapping[str, Any], key: str, flag: str) -> Any:
    """``table[config[key]]``, or a ``UserError`` naming ``flag`` (e.g. ``--config.model.name``) and the choices."""
    value = config.get(key)
    if value not in table:
        raise UserError(f"{flag}={value!r}: must be one of {tuple(table)}")
    return table[value]


def create_backbone(model_config: Mapping[str, Any], *, frozen_until: str | None = None) -> nn.Module:
    """The backbone of ``config.model`` (``backbone.name``, its keys, ``dtype``), frozen up to ``frozen_until``."""
    entry = choose(BACKBONES, model_config["backbone"], "name", "--config.model.backbone.name")
    dtype = choose(DTYPES, model_config, "dtype", "--config.model.dtype")
    backbone = entry.build(model_config["backbone"], dtype=dtype, frozen_until=frozen_until)
    if frozen_until is not None and frozen_until not in backbone.endpoint_names:
        raise ValueError(f"cannot freeze until {frozen_until!r}: not an endpoint of the "
                         f"{model_config['backbone']['name']!r} backbone {backbone.endpoint_names}")
    return backbone


def backbone_endpoints(model_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The endpoint names of ``config.model``'s backbone, in forward order (for ``train.freeze_until``)."""
    return tuple(create_backbone(model_config).endpoint_names)


def create_model(model_config: Mapping[str, Any], num_classes: int, *, frozen_until: str | None = None,
                 input_endpoint: str | None = None) -> nn.Module:
    """The un-initialised model ``config.model.name``.

    ``frozen_until`` freezes the backbone up to that endpoint; ``input_endpoint``
    makes the model take the backbone's output at that endpoint (keyword input
    ``features``) instead of ``frames``: the trainable rest behind a cached
    prefix. Every variant has the same variables.

    Raises:
      UserError: naming ``--config.model.name`` / ``--config.model.backbone.name`` /
        ``--config.model.dtype`` (and the choices) when the value is not registered.
    """
    build = choose(MODELS, model_config, "name", "--config.model.name")
    return build(model_config, num_classes, frozen_until=frozen_until, input_endpoint=input_endpoint)


def import_backbone_weights(model_config: Mapping[str, Any], variables: Variables,
                            path: str | PathLike[str]) -> Variables:
    """``variables`` of a model with its ``backbone`` variables replaced by the published weights in ``path``.

    The importer registered with ``config.model.backbone.name`` reads the file and
    checks it against the backbone's variables; the rest of the model stays as it is.

    Raises:
      UserError: when the backbone has no importer, or the model has no backbone.
    """
    entry = choose(BACKBONES, model_config["backbone"], "name", "--config.model.backbone.name")
    name = model_config["backbone"]["name"]
    if entry.import_weights is None:
        raise UserError(f"--config.model.weights={str(path)!r}: the {name!r} backbone has no weight importer; "
                        f"leave --config.model.weights=''")
    collections = [c for c, tree in variables.items() if "backbone" in tree]
    if not collections:
        raise UserError(f"--config.model.weights={str(path)!r}: model {model_config['name']!r} has no backbone "
                        f"to load it into; leave --config.model.weights=''")
    loaded = entry.import_weights({c: variables[c]["backbone"] for c in collections}, path,
                                  model_config["backbone"])
    return {**variables, **{c: {**variables[c], "backbone": loaded[c]} for c in collections}}
