"""PyTorch reference models for the merjax equivalence tests and benchmarks.

Written from scratch (no torchvision) after the VGGFace2 PyTorch port
``resnet50_ft``: stride on the first 1x1 conv of each bottleneck, stem max-pool
3x3/2 with padding 0 and ``ceil_mode=True``, BatchNorm eps 1e-5. Parameterised by
``stage_sizes`` and ``width`` so tests can use small networks; state-dict keys are
those of the published weights (``layer1.0.downsample.1.running_var``, ``fc.weight``).
The pooling is a global average (``resnet50_ft`` uses AvgPool2d(7), the same at 224x224).
``se_reduction`` gives ``senet50_ft`` (``models/senet.py`` of cydonia999/VGGFace2-pytorch):
each bottleneck's ``bn3`` output is scaled by sigmoid(conv5(relu(conv4(avg_pool(out)))))
(1x1 convs with bias, C -> C // 16 -> C) before the residual add; the port's SE pool,
``avg_pool2d(kernel_size=H)``, is global for square maps and global here at any size.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from merjax.weights.state_dict import lstm_params_from_state_dict, resnet_variables_from_state_dict

VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: bool = False,
                 se_reduction: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * 4),
        ) if downsample else None
        self.se_reduction = se_reduction
        if se_reduction is not None:
            self.conv4 = nn.Conv2d(planes * 4, planes * 4 // se_reduction, 1, bias=True)
            self.conv5 = nn.Conv2d(planes * 4 // se_reduction, planes * 4, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se_reduction is not None:
            se = self.relu(self.conv4(out.mean((2, 3), keepdim=True)))
            out = torch.sigmoid(self.conv5(se)) * out
        return self.relu(out + residual)


class ResNet(nn.Module):
    """VGGFace2-variant ResNet (SE-ResNet with ``se_reduction``) on NCHW preprocessed input."""

    def __init__(self, stage_sizes: Sequence[int] = (3, 4, 6, 3), width: int = 64,
                 num_classes: int | None = None, se_reduction: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)
        inplanes = width
        for s, size in enumerate(stage_sizes):
            planes = width * 2**s
            blocks = [Bottleneck(inplanes, planes, 2 if s > 0 else 1, downsample=True,
                                 se_reduction=se_reduction)]
            blocks += [Bottleneck(planes * 4, planes, se_reduction=se_reduction)
                       for _ in range(size - 1)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            inplanes = planes * 4
        self.num_stages = len(stage_sizes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes) if num_classes is not None else None

    def endpoints(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"conv1": self.relu(self.bn1(self.conv1(x)))}
        x = out["pool1"] = self.maxpool(out["conv1"])
        for s in range(self.num_stages):
            x = out[f"layer{s + 1}"] = getattr(self, f"layer{s + 1}")(x)
        x = out["pooled"] = torch.flatten(self.avgpool(x), 1)
        if self.fc is not None:
            out["logits"] = self.fc(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.endpoints(x)
        return out["logits"] if self.fc is not None else out["pooled"]


def published_state(model: nn.Module) -> dict[str, np.ndarray]:
    """A reference model's state dict as the published files hold it: numpy, no BN counters."""
    return {k: v.numpy().copy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, BN affine params and BN running stats, scaled so activations stay O(1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / fan_in**0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model


def preprocess(frames_rgb: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] RGB in [0, 255] -> [N, 3, H, W] BGR minus the VGGFace2 mean."""
    bgr = frames_rgb.float().flip(-1) - torch.tensor(VGGFACE2_MEAN_BGR)
    return bgr.reshape(-1, *bgr.shape[-3:]).permute(0, 3, 1, 2).contiguous()


class ClipClassifier(nn.Module):
    """ResNet per frame -> BiLSTM (or stacked LSTM) -> fc1-fc3, on [B,T,H,W,3] RGB frames."""

    def __init__(self, num_classes: int, stage_sizes: Sequence[int] = (3, 4, 6, 3),
                 width: int = 64, hidden: int = 128, layers: int = 1,
                 bidirectional: bool = True, head: Sequence[int] = (512, 128), dropout: float = 0.5):
        super().__init__()
        self.backbone = ResNet(stage_sizes, width)
        features = width * 2 ** (len(stage_sizes) - 1) * Bottleneck.expansion
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True,
                            bidirectional=bidirectional)
        sizes = [hidden * (2 if bidirectional else 1), *head]
        fcs: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            fcs += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        self.head = nn.Sequential(*fcs, nn.Linear(sizes[-1], num_classes))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, steps = frames.shape[:2]
        feats = self.backbone(preprocess(frames)).reshape(batch, steps, -1)
        packed = nn.utils.rnn.pack_padded_sequence(
            feats, mask.sum(-1).cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        final = torch.cat([h_n[-2], h_n[-1]], -1) if self.lstm.bidirectional else h_n[-1]
        return self.head(final)


def merjax_clip_variables(model: ClipClassifier) -> dict[str, Any]:
    """The variables of the equivalent ``merjax.models.ClipClassifier`` (backbone without fc)."""
    state = model.state_dict()
    backbone = resnet_variables_from_state_dict(
        {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    head = {f"fc{i + 1}": {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}
            for i, m in enumerate(linears)}
    return {
        "params": {"backbone": backbone["params"],
                   "temporal": lstm_params_from_state_dict(state, prefix="lstm."), "head": head},
        "batch_stats": {"backbone": backbone["batch_stats"]},
    }
