"""Grad-CAM against PyTorch autograd, clip padding, landmark regions, scores and overlays."""

from __future__ import annotations

import functools

import cv2
import jax
import matplotlib
import ml_collections
import numpy as np
import pytest
import torch
from torch import nn

from datasets.synthetic_me import render
from merjax.faces.regions import hull_mask
from merjax.interpret import gradcam, overlay, region_scores, resize_maps, spatial_endpoints
from merjax.models import ResNet, create_model, vggface2_preprocess
from merjax.weights import resnet_variables_from_state_dict
from tests import torch_reference as ref
from tests.parity import assert_close, random_frames

STAGES, WIDTH, SIZE, CLASSES = (1, 1), 4, 32, 5


# --------------------------------------------------------------------------- #
# Grad-CAM, computed independently with PyTorch autograd.
# --------------------------------------------------------------------------- #

def torch_gradcam(activations: torch.Tensor, logits: torch.Tensor,
                  target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM from a retained activation [N,K,h,w] of a graph ending in logits [B,C]: maps [N,h,w], targets."""
    if target is None:
        target = logits.argmax(-1).numpy()
    logits.gather(1, torch.from_numpy(np.asarray(target, np.int64))[:, None]).sum().backward()
    weights = activations.grad.mean(dim=(2, 3))
    maps = torch.relu(torch.einsum("nkhw,nk->nhw", activations, weights))
    return maps.detach().numpy(), np.asarray(target)


def _torch_resnet(num_classes: int | None = CLASSES, seed: int = 0) -> ref.ResNet:
    return ref.randomize_(ref.ResNet(STAGES, width=WIDTH, num_classes=num_classes), seed=seed).eval()


@pytest.mark.parametrize("endpoint", ["conv1", "pool1", "layer1", "layer2"])
def test_bare_resnet_matches_torch(endpoint):
    torch_model = _torch_resnet()
    model = ResNet(stage_sizes=STAGES, width=WIDTH, num_classes=CLASSES)
    variables = resnet_variables_from_state_dict(torch_model.state_dict())
    frames = random_frames((3, SIZE, SIZE, 3))
    target = np.array([0, 3, 4])
    result = gradcam(model, variables, {"frames": vggface2_preprocess(frames)}, endpoint, target)

    endpoints = torch_model.endpoints(ref.preprocess(torch.from_numpy(frames)))
    endpoints[endpoint].retain_grad()
    expected, _ = torch_gradcam(endpoints[endpoint], endpoints["logits"], target)
    assert result.maps.shape == expected.shape
    assert expected.max() > 0 and (expected == 0).any()         # the ReLU both passes and cuts
    assert_close(result.maps, expected)
    assert_close(result.logits, endpoints["logits"].detach().numpy())
    np.testing.assert_array_equal(result.target, target)


def _frame_classifier_pair(seed: int = 1):
    """A merjax FrameClassifier and the same network in PyTorch (ResNet -> fc1 -> ReLU -> fc2)."""
    config = ml_collections.ConfigDict({
        "name": "frame_classifier", "dtype": "float32",
        "backbone": {"name": "resnet", "stage_sizes": STAGES, "width": WIDTH},
        "head": {"hidden": (16,), "dropout": 0.5}})
    model = create_model(config, CLASSES)
    backbone = _torch_resnet(num_classes=None, seed=seed)
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(WIDTH * 2 ** (len(STAGES) - 1) * 4, 16), nn.ReLU(), nn.Linear(16, CLASSES)).eval()
    converted = resnet_variables_from_state_dict(backbone.state_dict())
    linears = [m for m in head if isinstance(m, nn.Linear)]
    variables = {
        "params": {"backbone": converted["params"],
                   "head": {f"fc{i + 1}": {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}
                            for i, m in enumerate(linears)}},
        "batch_stats": {"backbone": converted["batch_stats"]},
    }
    return model, variables, backbone, head


@pytest.mark.parametrize("endpoint", ["layer1", "layer2"])
def test_frame_classifier_matches_torch(endpoint):
    model, variables, backbone, head = _frame_classifier_pair()
    frames = random_frames((3, SIZE, SIZE, 3), seed=2)
    result = gradcam(model, variables, {"frames": frames}, endpoint)

    endpoints = backbone.endpoints(ref.preprocess(torch.from_numpy(frames)))
    endpoints[endpoint].retain_grad()
    logits = head(endpoints["pooled"])
    expected, expected_target = torch_gradcam(endpoints[endpoint], logits, None)
    np.testing.assert_array_equal(result.target, expected_target)
    assert expected.max() > 0
    assert_close(result.maps, expected)


# --------------------------------------------------------------------------- #
# Clips: a map per frame, zero on padding.
# --------------------------------------------------------------------------- #

BATCH, STEPS = 2, 5
MASK = np.arange(STEPS)[None, :] < np.array([[STEPS], [3]])       # clip 1 has two padded frames


def _clip_pair():
    """A merjax BiLSTM ClipClassifier and the torch reference with the same weights."""
    config = ml_collections.ConfigDict({
        "name": "clip_classifier", "dtype": "float32",
        "backbone": {"name": "resnet", "stage_sizes": STAGES, "width": WIDTH},
        "temporal": {"kind": "bilstm", "hidden": 5, "layers": 1, "dropout": 0.0},
        "head": {"hidden": (8, 6), "dropout": 0.5}})
    torch_model = ref.ClipClassifier(3, stage_sizes=STAGES, width=WIDTH, hidden=5, head=(8, 6))
    ref.randomize_(torch_model, seed=5).eval()
    with torch.no_grad():
        torch_model.backbone.conv1.weight /= 100.0   # keep [0, 255] inputs from saturating the LSTM
    return create_model(config, 3), ref.merjax_clip_variables(torch_model), torch_model


@pytest.mark.parametrize("endpoint", ["layer1", "layer2"])
def test_clip_classifier_matches_torch_per_frame(endpoint):
    model, variables, torch_model = _clip_pair()
    frames = random_frames((BATCH, STEPS, SIZE, SIZE, 3), seed=3)
    target = np.array([2, 0])
    result = gradcam(model, variables, {"frames": frames, "mask": MASK}, endpoint, target)

    retained = []

    def keep(module, inputs, output):
        output.retain_grad()
        retained.append(output)

    hook = getattr(torch_model.backbone, endpoint).register_forward_hook(keep)
    logits = torch_model(torch.from_numpy(frames), torch.from_numpy(MASK))
    hook.remove()
    expected, _ = torch_gradcam(retained[0], logits, target)        # frames flattened: [B*T,h,w]
    expected = expected.reshape(BATCH, STEPS, *expected.shape[1:])
    assert result.maps.shape == expected.shape
    assert (expected[MASK].max(axis=(-2, -1)) > 0).mean() > 0.5     # most valid frames have a map
    assert_close(result.maps, expected)
    np.testing.assert_array_equal(np.asarray(result.maps)[~MASK], 0.0)


def test_clip_padding_is_ignored():
    """Padded frames get all-zero maps, and their content changes no valid frame's map."""
    model, variables, _ = _clip_pair()
    explain = jax.jit(functools.partial(gradcam, model, endpoint="layer1"))
    frames = random_frames((BATCH, STEPS, SIZE, SIZE, 3), seed=4)
    other = frames.copy()
    other[~MASK] = random_frames((BATCH, STEPS, SIZE, SIZE, 3), seed=5)[~MASK]
    maps, moved = (np.asarray(explain(variables, {"frames": f, "mask": MASK}).maps) for f in (frames, other))
    np.testing.assert_array_equal(maps[~MASK], 0.0)
    np.testing.assert_allclose(moved, maps, rtol=1e-6, atol=1e-6 * maps.max())
    changed = frames.copy()
    changed[1, 1] = random_frames((SIZE, SIZE, 3), seed=6)        # a valid frame of clip 1
    again = np.asarray(explain(variables, {"frames": changed, "mask": MASK}).maps)
    assert not np.allclose(again[1, 0], maps[1, 0])                # the clip's other frames see it
    np.testing.assert_allclose(again[0], maps[0], rtol=1e-6, atol=1e-6 * maps.max())   # other clips don't


# --------------------------------------------------------------------------- #
# Targets, jit, frozen layers, errors.
# --------------------------------------------------------------------------- #

def test_default_target_is_the_predicted_class_under_jit():
    torch_model = _torch_resnet(seed=0)
    model = ResNet(stage_sizes=STAGES, width=WIDTH, num_classes=CLASSES)
    variables = resnet_variables_from_state_dict(torch_model.state_dict())
    inputs = {"frames": vggface2_preprocess(random_frames((6, SIZE, SIZE, 3), seed=8))}  # two classes predicted
    explain = jax.jit(functools.partial(gradcam, model, endpoint="layer1"))
    predicted = explain(variables, inputs)
    logits, _ = model.apply(variables, inputs["frames"], train=False)
    assert_close(predicted.logits, logits)
    np.testing.assert_array_equal(predicted.target, np.argmax(logits, -1))
    assert len(set(np.asarray(predicted.target).tolist())) > 1
    explicit = explain(variables, inputs, target=predicted.target)
    np.testing.assert_array_equal(np.asarray(explicit.maps), np.asarray(predicted.maps))
    other = explain(variables, inputs, target=(np.asarray(predicted.target) + 1) % CLASSES)
    assert not np.allclose(other.maps, predicted.maps)
    eager = gradcam(model, variables, inputs, "layer1")
    assert_close(eager.maps, predicted.maps, rtol=1e-5)


def test_frozen_backbone_does_not_stop_gradcam():
    torch_model = _torch_resnet(seed=9)
    variables = resnet_variables_from_state_dict(torch_model.state_dict())
    inputs = {"frames": vggface2_preprocess(random_frames((2, SIZE, SIZE, 3), seed=9))}
    free, frozen = (
        np.stack([np.asarray(gradcam(model, variables, inputs, "layer1", target).maps) for target in range(CLASSES)])
        for model in (ResNet(stage_sizes=STAGES, width=WIDTH, num_classes=CLASSES),
                      ResNet(stage_sizes=STAGES, width=WIDTH, num_classes=CLASSES, frozen_until="layer2")))
    assert free.max() > 0
    np.testing.assert_array_equal(frozen, free)


def test_bad_requests_are_named():
    model = ResNet(stage_sizes=STAGES, width=WIDTH, num_classes=CLASSES)
    assert spatial_endpoints(model) == ("conv1", "pool1", "layer1", "layer2")
    with pytest.raises(ValueError, match="'pooled'"):
        gradcam(model, {}, {"frames": np.zeros((1, SIZE, SIZE, 3))}, "pooled")
    with pytest.raises(ValueError, match="num_classes"):
        gradcam(ResNet(stage_sizes=STAGES, width=WIDTH), {}, {"frames": np.zeros((1, SIZE, SIZE, 3))}, "layer1")
    clip_model, variables, _ = _clip_pair()
    with pytest.raises(ValueError, match="windows"):
        gradcam(clip_model, variables, {"frames": np.zeros((1, 4, SIZE, SIZE, 3)), "mask": np.ones((1, 4), bool),
                                        "windows": np.zeros((1, 1, 2), np.int32)}, "layer1")


# --------------------------------------------------------------------------- #
# Upsampling, region scores (masks: tests/test_face_regions.py), overlay.
# --------------------------------------------------------------------------- #

def test_resize_maps_is_bilinear_with_half_pixel_centres():
    maps = np.array([[0.0, 1.0, 3.0], [2.0, 0.0, 1.0]], np.float32)
    expected = cv2.resize(maps, (9, 4), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_maps(maps, (4, 9), normalise=False), expected, atol=1e-6)
    np.testing.assert_allclose(resize_maps(maps, (4, 9)), expected / expected.max(), atol=1e-6)
    batch = resize_maps(np.stack([maps, np.zeros_like(maps)])[None], 6)
    assert batch.shape == (1, 2, 6, 6)
    np.testing.assert_array_equal(batch[0, 1], 0.0)                    # an empty map stays empty


def _template_landmarks(size: int) -> np.ndarray:
    """The synthetic faces' neutral 68 landmarks, in pixels of a size x size crop."""
    return render.template()[:68] * (size - 1)


def _blob(centre: np.ndarray, size: int, sigma: float = 2.0) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))


def test_region_scores():
    size = 64
    landmarks = _template_landmarks(size)
    mask = hull_mask(landmarks, (size, size))
    mouth = _blob(landmarks[48:60].mean(0), size)
    corner = _blob(np.array([4.0, 4.0]), size)
    uniform = np.full((size, size), 0.3)
    scores = region_scores(np.stack([mouth, corner, uniform, np.zeros_like(uniform)]), mask)
    inside, lift, area = (np.asarray(s) for s in scores)
    np.testing.assert_allclose(area, mask.mean())
    assert inside[0] > 0.95 and inside[1] < 0.01
    assert lift[0] > 2.0 and lift[1] < 0.05
    np.testing.assert_allclose(lift[2], 1.0, rtol=1e-5)
    np.testing.assert_allclose(inside[2], mask.mean(), rtol=1e-5)
    assert np.isnan(inside[3]) and np.isnan(lift[3])
    per_mask = region_scores(np.stack([mouth, mouth]), np.stack([mask, ~mask]))
    np.testing.assert_allclose(np.asarray(per_mask.inside).sum(), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="resize_maps"):
        region_scores(np.ones((8, 8)), mask)


def test_overlay_blends_a_jet_heatmap():
    image = random_frames((8, 10, 3), seed=11)
    heatmap = np.zeros((8, 10), np.float32)
    heatmap[2, 3] = 4.0
    np.testing.assert_array_equal(overlay(image, heatmap, alpha=0.0), image)
    colours = overlay(image, heatmap, alpha=1.0)
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_array_equal(colours[2, 3], np.round(np.asarray(jet(1.0)[:3]) * 255))
    np.testing.assert_array_equal(colours[7, 9], np.round(np.asarray(jet(0.0)[:3]) * 255))
    half = overlay(image, heatmap, alpha=0.5)
    assert half.dtype == np.uint8 and half.shape == image.shape
    np.testing.assert_allclose(half.astype(float), (image.astype(float) + colours) / 2, atol=1.0)
    coarse = overlay(image, heatmap[::2, ::2])                        # maps are upsampled to the image
    assert coarse.shape == image.shape
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), heatmap)
