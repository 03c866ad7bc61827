"""The keras-vggface ``.h5`` releases load like the pickles; bad weight files fail clearly at load time.

The test writes a PyTorch reference network's weights in the Keras 2 HDF5 layout of
``rcmalli_vggface_tf_*.h5`` itself (layer and weight names, HWIO / [in, out] kernels,
``layer_names`` / ``weight_names`` attributes, weightless layers), so the reader is
checked against an independent inverse of its mapping, then by parity with torch.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest

from merjax.models import ResNet, SENet50
from merjax.weights import (
    keras_h5_to_state_dict,
    load_vggface2,
    load_vggface2_pickle,
    resnet_variables_from_state_dict,
)
from tests import torch_reference as ref
from tests.parity import assert_resnet_matches_torch, random_frames

SE_KEY = re.compile(r"layer\d+\.\d+\.conv[45]\.")
_BLOCK_ROLES = {"conv1": "1x1_reduce", "bn1": "1x1_reduce/bn", "conv2": "3x3", "bn2": "3x3/bn",
                "conv3": "1x1_increase", "bn3": "1x1_increase/bn", "downsample.0": "1x1_proj",
                "downsample.1": "1x1_proj/bn", "conv4": "1x1_down", "conv5": "1x1_up"}
_TOP_LAYERS = {"conv1": "conv1/7x7_s2", "bn1": "conv1/7x7_s2/bn", "fc": "classifier"}
KerasLayers = Mapping[str, Sequence[tuple[str, np.ndarray]]]


def keras_weight(key: str, value: np.ndarray) -> tuple[str, str, np.ndarray]:
    """``layer2.0.downsample.1.running_var`` -> (``conv3_1_1x1_proj/bn``, its weight name, array)."""
    module, leaf = key.rsplit(".", 1)
    block = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", module)
    if block:
        layer = f"conv{int(block[1]) + 1}_{int(block[2]) + 1}_{_BLOCK_ROLES[block[3]]}"
    else:
        layer = _TOP_LAYERS[module]
    is_bn = layer.endswith("/bn")
    name = {"weight": "gamma" if is_bn else "kernel", "bias": "beta" if is_bn else "bias",
            "running_mean": "moving_mean", "running_var": "moving_variance"}[leaf]
    if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:
        value = value.T
    return layer, f"{layer}/{name}:0", value


def write_keras_h5(state: Mapping[str, np.ndarray], path: Path, *, layout: str = "root",
                   extra: KerasLayers | None = None) -> Path:
    """Writes ``state`` as keras-vggface's Keras 2 weight files are laid out.

    ``layout``: ``root`` (``model.save_weights``), ``model_weights`` (``model.save``) or
    ``chunked`` (``layer_names`` split into ``layer_names0``, ``layer_names1`` as Keras does
    for long lists). ``extra`` adds weights to layers (new or existing), after ``state``'s.
    """
    layers: dict[str, list[tuple[str, np.ndarray]]] = {"input_1": []}
    for key, value in state.items():
        layer, name, array = keras_weight(key, value)
        layers.setdefault(layer, []).append((name, array))
        if layer == "conv1/7x7_s2/bn":
            layers.update({"activation_1": [], "max_pooling2d_1": []})
    layers["avg_pool"] = []
    for layer, weights in (extra or {}).items():
        layers.setdefault(layer, []).extend(weights)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        root = f.create_group("model_weights") if layout == "model_weights" else f
        names = np.asarray([name.encode() for name in layers])   # fixed-length bytes, as Keras 2 wrote
        if layout == "chunked":
            root.attrs["layer_names0"], root.attrs["layer_names1"] = np.array_split(names, 2)
        else:
            root.attrs["layer_names"] = names
        for layer, weights in layers.items():
            group = root.require_group(layer)
            group.attrs["weight_names"] = np.asarray([name.encode() for name, _ in weights])
            for name, array in weights:
                group.create_dataset(name, data=array)
    return path


def small_torch_resnet(se_reduction: int | None = None, seed: int = 6) -> ref.ResNet:
    model = ref.ResNet((2, 1, 1, 1), width=8, num_classes=5, se_reduction=se_reduction)
    return ref.randomize_(model, seed=seed).eval()


@pytest.mark.parametrize("se_reduction,layout", [(None, "root"), (16, "model_weights"), (16, "chunked")])
def test_small_network_from_keras_h5_matches_torch(se_reduction, layout, tmp_path):
    torch_model = small_torch_resnet(se_reduction)
    state = ref.published_state(torch_model)
    loaded = keras_h5_to_state_dict(write_keras_h5(state, tmp_path / "w.h5", layout=layout))
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)

    model = ResNet(stage_sizes=(2, 1, 1, 1), width=8, num_classes=5, se_reduction=se_reduction)
    variables = resnet_variables_from_state_dict(loaded)
    frames = random_frames((2, 32, 32, 3), seed=7)
    assert_resnet_matches_torch(model, variables, torch_model, frames)


@pytest.fixture(scope="module")
def senet50_h5(senet50_state, tmp_path_factory) -> Path:
    return write_keras_h5(senet50_state, tmp_path_factory.mktemp("keras") / "rcmalli_vggface_tf_senet50.h5")


def test_load_vggface2_senet50_keras_h5_matches_torch(senet50_torch, senet50_h5):
    variables = load_vggface2(senet50_h5, "senet50")
    frames = random_frames((2, 32, 32, 3), seed=9)
    assert_resnet_matches_torch(SENet50(num_classes=8631), variables, senet50_torch, frames)
    assert "fc" not in load_vggface2(senet50_h5, "senet50", include_fc=False)["params"]


def test_keras_h5_of_another_architecture_names_the_keys(senet50_state, senet50_h5, tmp_path):
    with pytest.raises(ValueError, match=r"tf_senet50\.h5: 64 key\(s\) not in resnet50: "
                                         r"'layer1\.0\.conv4\.bias'"):
        load_vggface2(senet50_h5, "resnet50")
    notop = {k: v for k, v in senet50_state.items() if not SE_KEY.match(k) and not k.startswith("fc.")}
    path = write_keras_h5(notop, tmp_path / "rcmalli_vggface_tf_notop_resnet50.h5")
    assert "conv4" not in load_vggface2(path, "resnet50", include_fc=False)["params"]["layer1_0"]
    with pytest.raises(ValueError, match=r"notop_resnet50\.h5: senet50 weight file lacks 64 key\(s\): "
                                         r"'layer1\.0\.conv4\.bias'"):
        load_vggface2(path, "senet50", include_fc=False)
    with pytest.raises(ValueError, match=r"notop_resnet50\.h5: resnet50 weight file lacks 2 key\(s\): "
                                         r"'fc\.bias' \(params/fc/bias\), 'fc\.weight'"):
        load_vggface2(path, "resnet50")


@pytest.fixture
def small_state() -> dict[str, np.ndarray]:
    return ref.published_state(ref.randomize_(ref.ResNet((1,), width=4, num_classes=3), seed=10))


def test_the_reader_is_picked_by_content_then_suffix(small_state, tmp_path):
    """An HDF5 file read whatever its name; a small net passes the reader, then fails the arch check."""
    h5_bytes = write_keras_h5(small_state, tmp_path / "w.h5").read_bytes()
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(h5_bytes)
    with pytest.raises(ValueError, match=r"weights\.bin: resnet50 weight file lacks"):
        load_vggface2(renamed, "resnet50")
    pickled = tmp_path / "weights.pkl"
    pickled.write_bytes(pickle.dumps(small_state))
    with pytest.raises(ValueError, match=r"weights\.pkl: resnet50 weight file lacks"):
        load_vggface2(pickled, "resnet50")
    not_h5 = tmp_path / "weights.h5"
    not_h5.write_bytes(pickle.dumps(small_state))
    with pytest.raises(ValueError, match=r"weights\.h5: not a readable HDF5 file"):
        load_vggface2(not_h5, "resnet50")


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_pickle_is_a_value_error_naming_the_file(small_state, tmp_path, protocol, fraction):
    data = pickle.dumps(small_state, protocol=protocol)
    path = tmp_path / "resnet50_ft_weight.pkl"
    path.write_bytes(data[:int(len(data) * fraction)])
    message = r"resnet50_ft_weight\.pkl: truncated or corrupt weight pickle"
    with pytest.raises(ValueError, match=message):
        load_vggface2_pickle(path)
    with pytest.raises(ValueError, match=message):
        load_vggface2(path, "resnet50")


def test_truncated_or_foreign_h5_is_a_value_error_naming_the_file(small_state, tmp_path):
    data = write_keras_h5(small_state, tmp_path / "w.h5").read_bytes()
    truncated = tmp_path / "rcmalli_vggface_tf_resnet50.h5"
    truncated.write_bytes(data[:len(data) // 2])
    for load in (keras_h5_to_state_dict, lambda p: load_vggface2(p, "resnet50")):
        with pytest.raises(ValueError, match=r"tf_resnet50\.h5: not a readable HDF5 file"):
            load(truncated)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"foreign\.h5: no Keras 'layer_names' attribute; only Keras 2 HDF5"):
        keras_h5_to_state_dict(foreign)


def test_keras3_weights_file_is_refused_clearly(tmp_path):
    path = tmp_path / "vggface.weights.h5"
    with h5py.File(path, "w") as f:
        f["layers/conv2d/vars/0"] = np.zeros((7, 7, 3, 64), np.float32)
        f["layers/batch_normalization/vars/0"] = np.ones(64, np.float32)
    with pytest.raises(ValueError, match=r"vggface\.weights\.h5: .*Keras 3 '\.weights\.h5' file.*"
                                         r"only Keras 2 HDF5 weight files"):
        load_vggface2(path, "resnet50")


@pytest.mark.parametrize("layer", ["dense_1", "conv2_1_1x1_down/bn", "conv1_1_1x1_reduce", "fc8"])
def test_unrecognised_keras_layer_is_an_error_naming_it(small_state, tmp_path, layer):
    path = write_keras_h5(small_state, tmp_path / "w.h5",
                          extra={layer: [(f"{layer}/kernel:0", np.zeros((4, 3), np.float32))]})
    with pytest.raises(ValueError, match=rf"w\.h5: unrecognised Keras layer '{re.escape(layer)}'"):
        keras_h5_to_state_dict(path)


def test_unexpected_weight_in_a_known_layer_is_an_error_naming_it(small_state, tmp_path):
    renorm = {"conv1/7x7_s2/bn": [("conv1/7x7_s2/bn/renorm_mean:0", np.zeros(4, np.float32))]}
    with pytest.raises(ValueError, match=r"w\.h5: unexpected weight "
                                         r"'conv1/7x7_s2/bn/renorm_mean:0' in layer 'conv1/7x7_s2/bn'"):
        keras_h5_to_state_dict(write_keras_h5(small_state, tmp_path / "w.h5", extra=renorm))
    # A bias on a conv the networks build without one passes the reader but not the conversion.
    bias = {"conv2_1_1x1_reduce": [("conv2_1_1x1_reduce/bias:0", np.zeros(4, np.float32))]}
    with pytest.raises(ValueError, match=r"b\.h5: unexpected ResNet state-dict key 'layer1\.0\.conv1\.bias'"):
        load_vggface2(write_keras_h5(small_state, tmp_path / "b.h5", extra=bias), "resnet50")
    listed_only = write_keras_h5(small_state, tmp_path / "l.h5")
    with h5py.File(listed_only, "r+") as f:
        del f["conv2_1_3x3/conv2_1_3x3/kernel:0"]
    with pytest.raises(ValueError, match=r"l\.h5: weight 'conv2_1_3x3/kernel:0' of layer 'conv2_1_3x3' "
                                         r"has no dataset"):
        keras_h5_to_state_dict(listed_only)
    flat = {"conv1/7x7_s2": [("conv1/7x7_s2/kernel:0", np.zeros((3, 4), np.float32))]}
    with pytest.raises(ValueError, match=r"f\.h5: 'conv1/7x7_s2/kernel:0' in layer 'conv1/7x7_s2' "
                                         r"has shape \(3, 4\); expected a 4-D kernel"):
        keras_h5_to_state_dict(write_keras_h5({}, tmp_path / "f.h5", extra=flat))


@pytest.mark.parametrize("name", ["w.pkl", "w.h5"])
def test_empty_and_missing_files(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(FileNotFoundError, match=re.escape(name)):
        load_vggface2(path, "resnet50")
    path.touch()
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: empty file"):
        load_vggface2(path, "resnet50")
    read = keras_h5_to_state_dict if name.endswith(".h5") else load_vggface2_pickle
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: (not a readable HDF5|truncated or corrupt)"):
        read(path)
    with pytest.raises(FileNotFoundError, match="missing"):
        read(tmp_path / "missing")
