"""RFR: RAM++'s fine-tuned network, a RAM-Restormer fed with frozen DINOv2 features (RAMPP_SPEC §e).

RAM++ fine-tunes its mask-pre-trained RAM-Restormer after adding "representation fusion" modules: a
frozen DINOv2 sees the degraded image, and three pairs of its hidden layers (shallow, mid, deep) are
each mixed by a learned gate, mapped to the latent's width by a conv adapter and added, through a 1x1
fusion conv, to the latent (deep), the level-3 decoder (mid, up-sampled once) and the level-2 decoder
(shallow, up-sampled twice). Semantic features from a large self-supervised model are robust to the
degradation, which is what the restoration features lack.

Module and parameter names, registration order (hence :func:`ramir.attributable_layers`: 439 layers for
the defaults, the reference's ``filter_name_RFR.txt`` set) and the parameter alias
``dino_fusion_*.gate_network.5.temperature`` follow the reference ``RestormerRFR``, so its checkpoints and
its RAM-Restormer initialisation load as they are. Generalised beyond the reference, which hard-codes
DINOv2-giant and ``dim=48``: ``dino_dim`` is the backbone's width (adapter hidden ``dino_dim // 2``, gate
input ``2 * dino_dim``), the adapter outputs ``8 * dim``, and ``dino_layers`` picks any six hidden
states, so DINOv2-small/base run on a CPU.

**The backbone is not part of the module's state.** It is loaded from ``dino_model`` (a local folder or
a hub name, ``transformers``' ``AutoModel``) on first use, or attached with
:meth:`RestormerRFR.attach_backbone`; ``RAMIR_DINOV2`` overrides the recorded name (checkpoints made
elsewhere). Its weights never enter the state dict, the optimiser, the EMA copy or the checkpoint.
``transformers`` is imported only then.

**Train/test discrepancy (decided: reference by default).** The reference's training step replaces all
six feature slots with the first deep one (hidden state 33), while testing uses the six distinct layers.
Each gate then mixes two equal tensors during training, so its MLP and temperature get zero gradient and
stay random, and at test time they mix layers the adapters never saw. ``train_features="reference"``
(default) reproduces this in train mode, because the published numbers come from it;
``train_features="distinct"`` trains on the six layers the test uses (the gates learn).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ramir.archs.descriptor import Architecture, shape
from ramir.archs.promptir import PAD_MULTIPLE, RESTORMER_FAMILY, Upsample, _reflect_pad_to_multiple, encode
from ramir.archs.restormer import RAMRestormer, RestormerConfigError, detect_restormer
from ramir.errors import CheckpointError, RamirError, first_line
from ramir.imagespace import IMAGENET_MEAN, IMAGENET_STD

# The reference's dict order, which its forward unpacks positionally; here features are looked up by key.
FEATURE_KEYS = ("shallow_feat1", "mid_feat1", "deep_feat1", "shallow_feat2", "mid_feat2", "deep_feat2")
# hidden_states indices of DINOv2-giant (40 layers) in the order shallow1, shallow2, mid1, mid2, deep1, deep2
REFERENCE_LAYERS = (7, 15, 20, 22, 33, 39)
_SLOT_ORDER = ("shallow_feat1", "shallow_feat2", "mid_feat1", "mid_feat2", "deep_feat1", "deep_feat2")
TRAIN_FEATURES = ("reference", "distinct")
DINO_ENV = "RAMIR_DINOV2"  # overrides the recorded dino_model (a folder or hub name)


def default_dino_layers(num_layers: int) -> tuple[int, ...]:
    """The reference's six layers of a 40-layer giant, scaled to another depth (12 -> 2,4,6,7,10,12)."""
    return tuple(min(num_layers, max(1, round(i * num_layers / 40))) for i in REFERENCE_LAYERS)


class _TemperatureSoftmax(nn.Module):
    """``softmax(z / max(T, 1e-8))`` over the two gate logits; T is the owning fusion's parameter, also
    registered here because the reference's state dict carries it under both names."""

    def __init__(self, temperature: nn.Parameter) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(z / self.temperature.clamp(min=1e-8), dim=-1)


class DinoFeatureFusion(nn.Module):
    """Gate between the two features of one level: pooled features -> MLP -> 2 weights -> weighted sum."""

    def __init__(self, dino_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1))  # registered first: the reference's order
        self.gate_network = nn.Sequential(
            nn.Linear(2 * dino_dim, dino_dim), nn.PReLU(dino_dim), nn.Linear(dino_dim, hidden),
            nn.PReLU(hidden), nn.Linear(hidden, 2), _TemperatureSoftmax(self.temperature),
        )

    def weights(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """(B, 2) gate weights from the globally pooled pair."""
        return self.gate_network(torch.cat([f1.mean(dim=(2, 3)), f2.mean(dim=(2, 3))], dim=1))

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        w = self.weights(f1, f2)[:, :, None, None, None]
        return w[:, 0] * f1 + w[:, 1] * f2


class DinoAdaptation(nn.Module):
    """DINOv2 width -> restoration width at 1/8: 3x3 conv, PReLU, 1x1 conv."""

    def __init__(self, dino_dim: int, out_dim: int) -> None:
        super().__init__()
        hidden = dino_dim // 2
        self.adaptation = nn.Sequential(
            nn.Conv2d(dino_dim, hidden, 3, padding=1), nn.PReLU(hidden), nn.Conv2d(hidden, out_dim, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptation(x)


class DinoRestorationFusion(nn.Module):
    """``restore + conv1x1([dino, restore])``: a residual correction, so a zero conv leaves the
    pre-trained path unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce_chan = nn.Conv2d(2 * channels, channels, kernel_size=1, bias=False)

    def forward(self, restore: torch.Tensor, dino: torch.Tensor) -> torch.Tensor:
        return restore + self.reduce_chan(torch.cat([dino, restore], dim=1))


class _SharedBackbone:
    """Holds the frozen backbone outside the module tree: not in ``state_dict``/``parameters``, and
    shared, not copied, by ``copy.deepcopy`` (the EMA copy must not duplicate a 1.1B-parameter model)."""

    def __init__(self, model: nn.Module | None = None) -> None:
        self.model = model

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedBackbone:
        return self


class DinoMissingError(RamirError, ImportError):
    """``transformers`` is needed for the DINOv2 backbone and is not installed."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise DinoMissingError(
            "the RFR network needs the DINOv2 backbone from 'transformers': pip install 'ramir[dino]'"
        ) from None
    return transformers


class BackboneError(CheckpointError, OSError):
    """The DINOv2 backbone cannot be loaded (one line, naming how to point ramir at it)."""


def load_dinov2(name_or_path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A frozen DINOv2 (``Dinov2Model``) from a local folder or a hub name, in eval mode."""
    tf = _transformers()
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir() and name_or_path.startswith(("/", ".", "~")):  # a path, not a hub name
        raise BackboneError(f"DINOv2 backbone folder not found: {name_or_path} (set {DINO_ENV} or pass "
                            "--dino)")
    try:
        model = tf.AutoModel.from_pretrained(str(folder) if folder.is_dir() else name_or_path, dtype=dtype)
    except OSError as exc:
        raise BackboneError(
            f"cannot load the DINOv2 backbone {name_or_path!r} (a folder with config.json and weights, or a "
            f"hub name; set {DINO_ENV} or pass --dino): {first_line(exc)}"
        ) from None
    return freeze(model)


def dinov2_from_config(**config: Any) -> nn.Module:
    """A randomly initialised, frozen DINOv2 from ``Dinov2Config`` fields (tests; no download)."""
    tf = _transformers()
    return freeze(tf.Dinov2Model(tf.Dinov2Config(**config)))


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class RestormerRFR(RAMRestormer):
    """RAM-Restormer plus gated DINOv2 fusion (81,757,117 trainable parameters by default, DINOv2 apart).

    Args (besides :class:`RAMRestormer`'s):
        dino_model: folder or hub name of the frozen backbone, loaded on first use (``RAMIR_DINOV2``
            overrides it); None when features are always passed or a backbone is attached.
        dino_dim: the backbone's hidden size (1536 giant, 1024 large, 768 base, 384 small).
        dino_layers: ``hidden_states`` indices for shallow1, shallow2, mid1, mid2, deep1, deep2
            (0 = embeddings); default: the reference's giant layers scaled to ``dino_depth``.
        dino_depth: the backbone's number of layers, only to derive ``dino_layers``.
        dino_dtype: "auto" (float16 on CUDA as the reference, float32 elsewhere), "float16", "float32".
        gate_hidden: width of the gate MLP's second layer (512).
        train_features: "reference" (train mode fills all six slots with deep_feat1, as the reference's
            training step; the gates never learn) or "distinct" (the six layers, as at test time).
    """

    def __init__(
        self,
        *,
        dino_model: str | None = None,
        dino_dim: int = 1536,
        dino_layers: Sequence[int] | None = None,
        dino_depth: int = 40,
        dino_dtype: str = "auto",
        gate_hidden: int = 512,
        train_features: str = "reference",
        **restormer_kwargs: Any,
    ) -> None:
        super().__init__(**restormer_kwargs)
        layers = tuple(dino_layers) if dino_layers is not None else default_dino_layers(dino_depth)
        if len(layers) != 6 or any(i < 0 for i in layers):
            raise RestormerConfigError(f"RFR: dino_layers needs 6 hidden-state indices >= 0, got {layers}")
        if train_features not in TRAIN_FEATURES:
            raise RestormerConfigError(f"RFR: train_features must be one of {TRAIN_FEATURES}, got "
                                       f"{train_features!r}")
        if dino_dtype not in ("auto", "float16", "float32"):
            raise RestormerConfigError(f"RFR: dino_dtype must be auto, float16 or float32, got "
                                       f"{dino_dtype!r}")
        if dino_dim < 2:
            raise RestormerConfigError(f"RFR: dino_dim must be >= 2, got {dino_dim}")
        self.dino_model, self.dino_layers, self.dino_dtype = dino_model, layers, dino_dtype
        self.train_features = train_features
        self._backbone = _SharedBackbone()

        dim = self.patch_embed.proj.out_channels
        c2, c3, c4 = 2 * dim, 4 * dim, 8 * dim
        rfr = {
            # which module serves which level was read off the fixtures (the numbering runs shallow -> deep)
            "dr_adaptation1": DinoAdaptation(dino_dim, c4),  # shallow -> decoder level 2
            "dr_adaptation2": DinoAdaptation(dino_dim, c4),  # mid -> decoder level 3
            "dr_adaptation3": DinoAdaptation(dino_dim, c4),  # deep -> latent
            "dr_fusion1": DinoRestorationFusion(c4),
            "dr_fusion2": DinoRestorationFusion(c3),
            "dr_fusion3": DinoRestorationFusion(c2),
            "up_4_3_dino1": Upsample(c4),  # shallow: 1/8 -> 1/4
            "up_4_3_dino2": Upsample(c4),  # mid: 1/8 -> 1/4
            "up_3_2_dino": Upsample(c3),  # shallow: 1/4 -> 1/2
            "dino_fusion_shallow": DinoFeatureFusion(dino_dim, gate_hidden),
            "dino_fusion_mid": DinoFeatureFusion(dino_dim, gate_hidden),
            "dino_fusion_deep": DinoFeatureFusion(dino_dim, gate_hidden),
        }
        # The reference registers these right after patch_embed: keep its parameter and MAC-layer order.
        rest = dict(self._modules)
        self._modules.clear()
        self._modules["patch_embed"] = rest.pop("patch_embed")
        self._modules.update(rfr)
        self._modules.update(rest)

    # -- the backbone ------------------------------------------------------------------------------

    def attach_backbone(self, model: nn.Module) -> None:
        """Use this (frozen) DINOv2 instead of loading ``dino_model``."""
        config = getattr(model, "config", None)
        n, width = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
        if n is not None and max(self.dino_layers) > n:
            raise RestormerConfigError(f"RFR: dino_layers {self.dino_layers} need a backbone with at least "
                                       f"{max(self.dino_layers)} layers; this one has {n}")
        expected = self.dino_fusion_deep.gate_network[0].out_features
        if width is not None and width != expected:
            raise RestormerConfigError(f"RFR: this network fuses {expected}-wide DINOv2 features; the "
                                       f"backbone is {width} wide (a different DINOv2 size)")
        self._backbone.model = freeze(model)

    def detach_backbone(self) -> None:
        """Drop the backbone, e.g. before sharing the module; it will be loaded again when needed."""
        self._backbone.model = None

    @property
    def backbone(self) -> nn.Module:
        """The frozen DINOv2, loaded on first use from ``RAMIR_DINOV2`` or ``dino_model``."""
        if self._backbone.model is None:
            name = os.environ.get(DINO_ENV) or self.dino_model
            if not name:
                raise BackboneError(f"RFR: no DINOv2 backbone: pass dino_features, attach_backbone(), set "
                                   f"{DINO_ENV} or build with dino_model=FOLDER_OR_HUB_NAME")
            # load in the dtype it will run in
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self.attach_backbone(load_dinov2(name, self._dtype_for(device)))
        return self._backbone.model

    def _dtype_for(self, device: torch.device) -> torch.dtype:
        if self.dino_dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.dino_dtype)

    def dino_pixels(self, x: torch.Tensor, patch: int = 14) -> torch.Tensor:
        """The backbone's input for an ImageNet-normalised batch, as the reference's preprocessing:
        reflect-pad to a multiple of 16, resize to ``patch/8`` of that (one token per latent pixel) with
        the antialiased bicubic of DINOv2's image processor, in its (ImageNet) normalisation. Equal
        (max difference 0) to transformers' BitImageProcessor called as the reference calls it, at six
        sizes: ``experiments/rampp/hf_preprocessing_check.py``."""
        xp = _reflect_pad_to_multiple(x.float(), PAD_MULTIPLE)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        size = (xp.shape[-2] // 8 * patch, xp.shape[-1] // 8 * patch)
        pixels = F.interpolate(xp * std + mean, size=size, mode="bicubic", align_corners=False,
                               antialias=True)
        return (pixels - mean) / std

    @torch.no_grad()
    def features_from_pixels(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The six features (B, dino_dim, h, w), float32, from one backbone pass over ``pixels``."""
        backbone = self.backbone
        dtype = self._dtype_for(pixels.device)
        first = next(backbone.parameters())
        if first.device != pixels.device or first.dtype != dtype:
            backbone.to(device=pixels.device, dtype=dtype)
        cfg = backbone.config
        gh, gw = pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size
        skip = 1 + getattr(cfg, "num_register_tokens", 0)  # CLS (and registers) carry no position
        hidden = backbone(pixel_values=pixels.to(dtype), output_hidden_states=True).hidden_states
        if max(self.dino_layers) >= len(hidden):
            raise RestormerConfigError(f"RFR: dino_layers {self.dino_layers} exceed the backbone's "
                                       f"{len(hidden) - 1} layers")
        out = {}
        for key, index in zip(_SLOT_ORDER, self.dino_layers, strict=True):
            tokens = hidden[index][:, skip:, :].float()
            out[key] = tokens.transpose(1, 2).reshape(pixels.shape[0], -1, gh, gw)
        return {k: out[k] for k in FEATURE_KEYS}

    def dino_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The six features of an ImageNet-normalised batch, each (B, dino_dim, Hp/8, Wp/8)."""
        return self.features_from_pixels(self.dino_pixels(x, self.backbone.config.patch_size))

    # -- forward -----------------------------------------------------------------------------------

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, dino_features: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """ImageNet-normalised (B, C, H, W) -> restored. ``dino_features`` (keys :data:`FEATURE_KEYS`,
        each (B, dino_dim, Hp/8, Wp/8)) are computed from ``x`` when not given."""
        h, w = x.shape[-2:]
        feats = dict(dino_features) if dino_features is not None else self.dino_features(x)
        if self.training and self.train_features == "reference":
            feats = dict.fromkeys(FEATURE_KEYS, feats["deep_feat1"])  # the reference's training step
        feats = {k: feats[k].to(x.dtype) for k in FEATURE_KEYS}
        inp = self._layout(_reflect_pad_to_multiple(x, PAD_MULTIPLE))

        shallow = self.dino_fusion_shallow(feats["shallow_feat1"], feats["shallow_feat2"])
        mid = self.dino_fusion_mid(feats["mid_feat1"], feats["mid_feat2"])
        deep = self.dino_fusion_deep(feats["deep_feat1"], feats["deep_feat2"])
        deep = self._layout(self.dr_adaptation3(deep))
        mid = self._layout(self.dr_adaptation2(mid))
        shallow = self._layout(self.dr_adaptation1(shallow))

        enc1, enc2, enc3, latent = encode(self, inp)
        latent = self.dr_fusion1(latent, deep)

        dec3 = self.reduce_chan_level3(self._layout(torch.cat([self.up4_3(latent), enc3], dim=1)))
        dec3 = self._run(self.decoder_level3, dec3)
        dec3 = self.dr_fusion2(dec3, self.up_4_3_dino2(mid))
        dec2 = self.reduce_chan_level2(self._layout(torch.cat([self.up3_2(dec3), enc2], dim=1)))
        dec2 = self._run(self.decoder_level2, dec2)
        dec2 = self.dr_fusion3(dec2, self.up_3_2_dino(self.up_4_3_dino1(shallow)))
        dec1 = self._run(self.decoder_level1, self._layout(torch.cat([self.up2_1(dec2), enc1], dim=1)))
        dec1 = self._run(self.refinement, dec1)
        return self.output(dec1)[..., :h, :w].contiguous()  # no global skip

    def rfr_layers(self) -> list[str]:
        """The fusion modules' attributable layers (33 in the reference), trained beside MAC's top-k."""
        from ramir.layers import attributable_layers

        return [n for n in attributable_layers(self) if n.startswith(RFR_PREFIXES)]


RFR_PREFIXES = ("dr_adaptation", "dr_fusion", "up_4_3_dino", "up_3_2_dino", "dino_fusion_")


def is_rfr_state(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(RFR_PREFIXES) for k in state_dict)


def with_fresh_fusion(model: RestormerRFR, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A RAM-Restormer state dict completed with ``model``'s own fusion modules, so that loading it
    keeps their fresh initialisation (the reference's strict=False start of fine-tuning) while every
    other key must still match exactly."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith(RFR_PREFIXES)}
    return {**own, **state_dict}


# ------------------------------------------------------------------------------------- descriptor
# DINOv2 width -> (hub name, depth): which backbone an RFR checkpoint was made for, as the weights only
# tell the width; RAMIR_DINOV2 or --dino overrides the name.
DINOV2_BY_WIDTH = {384: ("facebook/dinov2-small", 12), 768: ("facebook/dinov2-base", 12),
                   1024: ("facebook/dinov2-large", 24), 1536: ("facebook/dinov2-giant", 40)}


def _looks_like(sd: Mapping[str, torch.Tensor]) -> bool:
    """RAM-Restormer's keys plus the DINOv2 fusion modules."""
    return "dino_fusion_deep.temperature" in sd and "dr_adaptation1.adaptation.0.weight" in sd


def _detect(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The RAM-Restormer reading of the shared keys, the DINOv2 width from the adapter."""
    kwargs = detect_restormer({k: v for k, v in sd.items() if not k.startswith(RFR_PREFIXES)})
    dino_dim = shape(sd, "dr_adaptation1.adaptation.0.weight", "RFR")[1]
    if dino_dim not in DINOV2_BY_WIDTH:
        raise CheckpointError(f"RFR checkpoint for a {dino_dim}-wide backbone: not a DINOv2 width "
                              f"({', '.join(map(str, DINOV2_BY_WIDTH))})")
    name, depth = DINOV2_BY_WIDTH[dino_dim]
    kwargs.update(dino_model=name, dino_dim=dino_dim, dino_layers=list(default_dino_layers(depth)))
    gate_hidden = shape(sd, "dino_fusion_deep.gate_network.2.weight", "RFR")[0]
    if gate_hidden != 512:
        kwargs["gate_hidden"] = gate_hidden
    return kwargs


def _load_backbone(network: nn.Module) -> None:
    _ = network.backbone  # load DINOv2 now, so that a missing backbone fails once, not per image


def _adopt_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """RAM++ fine-tuning starts RFR from a RAM-Restormer checkpoint (the fusion modules fresh)."""
    return None if is_rfr_state(state_dict) else with_fresh_fusion(model, state_dict)


ARCHITECTURE = Architecture(
    name="rfr", display_name="RAM++ RFR", network=RestormerRFR, **RESTORMER_FAMILY,
    exportable=False,  # the DINOv2 features are computed outside the graph; not exported yet
    looks_like=_looks_like, detect=_detect,
    expected_keys=("dr_adaptation1.adaptation.0.weight", "dino_fusion_deep.temperature"),
    prepare=_load_backbone, adopt_state=_adopt_state,
)
