"""OverLoCK configuration: every architectural hyperparameter as a named field, and the released variants.

Over 300 lines because it is the one owner of three tables the model code and the Hub copy need together:
the released variants, the named feature maps and the ablation presets, with the field documentation.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from dataclasses import dataclass

from transformers import PretrainedConfig

try:  # transformers >= 5
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # transformers 4.x
    from transformers.utils.backbone_utils import BackboneConfigMixin

# DilatedReparam branch table (kernel size k, dilation r) for each large kernel size K (UniRepLKNet's).
DEFAULT_REPARAM_BRANCHES: dict[int, list[tuple[int, int]]] = {
    19: [(5, 1), (7, 1), (9, 1), (9, 2), (3, 4), (3, 5), (3, 7)],
    17: [(5, 1), (7, 1), (9, 2), (3, 4), (3, 5), (3, 7)],
    15: [(5, 1), (7, 1), (7, 2), (3, 3), (3, 5), (3, 7)],
    13: [(5, 1), (7, 1), (7, 2), (3, 3), (3, 4), (3, 5)],
    11: [(5, 1), (7, 1), (5, 2), (3, 3), (3, 4), (3, 5)],
    9: [(5, 1), (7, 1), (5, 2), (3, 3), (3, 4)],
    7: [(5, 1), (3, 1), (3, 2), (3, 3)],
    5: [(3, 1), (3, 2)],
}

# The architecture every released variant shares (ARCHITECTURE.md section 2); the constructor's defaults.
_RELEASED_COMMON = dict(
    kernel_sizes=[17, 15, 13, 7], small_kernel_size=5, mlp_ratio=4.0, focus_mlp_ratio=3.0, context_reduction=4,
    context_pool_size=7, use_layer_scale=[False, False, True, True], projection_dim=1024,
)


@dataclass(frozen=True)
class Variant:
    """A released OverLoCK variant: its architecture, evaluation crop and the paper's ImageNet-1K top-1 (%) of
    the released weights (GitHub release v1 of LMMMEng/OverLoCK, `overlock_{x}_in1k_224[_reparam].pth`)."""

    name: str  # canonical name, e.g. "overlock-xt"
    depths: tuple[int, int, int, int]
    focus_depths: tuple[int, int]
    hidden_sizes: tuple[int, int, int, int]
    focus_num_heads: tuple[int, int]
    crop_pct: float
    released_top1: float

    @property
    def display_name(self) -> str:
        """`"OverLoCK-XT"`."""
        return "OverLoCK-" + self.name.split("-", 1)[1].upper()

    @property
    def architecture(self) -> dict:
        """Every architectural `OverLoCKConfig` field of the variant (fresh lists)."""
        fields = copy.deepcopy(_RELEASED_COMMON)
        fields.update(depths=list(self.depths), focus_depths=list(self.focus_depths),
                      hidden_sizes=list(self.hidden_sizes), focus_num_heads=list(self.focus_num_heads))
        return fields


# The one table of released variants, by canonical name.
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("overlock-xt", (2, 2, 3, 2), (6, 2), (56, 112, 256, 336), (4, 6), crop_pct=0.925, released_top1=82.7),
        Variant("overlock-t", (4, 4, 6, 2), (12, 2), (64, 128, 256, 512), (4, 8), crop_pct=0.95, released_top1=84.2),
        Variant("overlock-s", (6, 6, 8, 3), (16, 3), (64, 128, 320, 512), (8, 16), crop_pct=0.95, released_top1=84.8),
        Variant("overlock-b", (8, 8, 10, 4), (20, 4), (80, 160, 384, 576), (6, 9), crop_pct=0.975, released_top1=85.1),
    )
}
IMAGENET_NUM_LABELS = 1000


def normalize_variant_name(name: str) -> str:
    """The canonical name (`overlock-xt`) of a released variant written as `overlock-xt`, `overlock_xt`, `xt`,
    `OverLoCK-XT`, ...; raises `ValueError` with the closest names ("did you mean ...") otherwise."""
    raw = str(name).strip().lower().replace("_", "-")
    for key in (raw, f"overlock-{raw}"):
        if key in VARIANTS:
            return key
    prefix, _, size = raw.rpartition("-")
    close = []
    if not prefix or difflib.SequenceMatcher(None, prefix, "overlock").ratio() >= 0.75:
        sizes = {v.name.split("-", 1)[1]: v.name for v in VARIANTS.values()}
        close = [sizes[s] for s in difflib.get_close_matches(size, list(sizes), n=2, cutoff=0.5)]
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise ValueError(f"Unknown OverLoCK variant {name!r}: {hint}known variants: {', '.join(VARIANTS)}")


def imagenet1k_id2label() -> dict[int, str]:
    """`{class index: name}` of the 1000 ImageNet-1K classes (the released checkpoints' head)."""
    from .imagenet_labels import IMAGENET1K_LABELS

    return dict(enumerate(IMAGENET1K_LABELS))


# The named feature maps of OverLoCK, in the order of `OverLoCKModel(...).hidden_states`; the one table that the
# model outputs, the backbone, the tests and the analyses read. Per map: the sub-network that produces it, its
# stride, its channels (`(i, context)`: `hidden_sizes[i]`, plus the context prior's `context_dim` when `context`),
# the `OverLoCKModelOutput` field holding it (None: in `hidden_states` only), whether `OverLoCKBackbone` offers it as
# a stage, and the backbone's former stage name (deprecated, still accepted).
FEATURE_MAPS: dict[str, dict] = {
    "stem": dict(network="stem", stride=4, channels=(0, False), output=None, backbone=True, legacy="stem"),
    "base_stride4": dict(network="base_net", stride=4, channels=(0, False), output=None, backbone=True,
                         legacy="stage1"),
    "base_stride8": dict(network="base_net", stride=8, channels=(1, False), output=None, backbone=True,
                         legacy="stage2"),
    "base_stride16": dict(network="base_net", stride=16, channels=(2, False), output="base_hidden_state",
                          backbone=False, legacy=None),
    "overview": dict(network="overview_net", stride=32, channels=(3, False), output="overview_hidden_state",
                     backbone=False, legacy=None),
    "focus_stride16": dict(network="focus_net", stride=16, channels=(2, True), output="focus_stride16_hidden_state",
                           backbone=True, legacy="stage3"),
    "focus_stride32": dict(network="focus_net", stride=32, channels=(3, True), output="last_hidden_state",
                           backbone=True, legacy="stage4"),
}
# `OverLoCKBackbone` stages (the released dense-prediction layout: stem, strides 4 / 8 of the Base-Net, the two
# Focus-Net maps) and the former names, which still work with a FutureWarning.
STAGE_NAMES = [name for name, info in FEATURE_MAPS.items() if info["backbone"]]
LEGACY_STAGE_NAMES = {info["legacy"]: name for name, info in FEATURE_MAPS.items()
                      if info["legacy"] and info["legacy"] != name}


def _current_stage_names(names: list[str] | None) -> list[str] | None:
    """`names` with the backbone's former stage names (`stage1`..`stage4`) replaced, with a FutureWarning."""
    if names is None or not any(name in LEGACY_STAGE_NAMES for name in names):
        return names
    renamed = [LEGACY_STAGE_NAMES.get(name, name) for name in names]
    warnings.warn(f"OverLoCK backbone stage names {list(names)} are deprecated; use {renamed} "
                  f"({', '.join(f'{old} -> {new}' for old, new in LEGACY_STAGE_NAMES.items())})",
                  FutureWarning, stacklevel=3)
    return renamed

ARCHITECTURES = ("overlock", "hierarchical")
TOKEN_MIXERS = ("contmix", "static")
QUERY_SOURCES = ("features", "context", "fused")
KEY_SOURCES = ("context", "features", "fused")

# Ablation presets of the OverLoCK supplement (Tables A-F), each a set of field overrides of OverLoCK-XT.
# Table C's focus_mlp_ratio keeps the parameters within about 1% of XT's (see `OverLoCKConfig`).
ABLATIONS: dict[str, dict] = {
    **{f"kernels-{a}-{b}-{c}": dict(table="A", fields=dict(kernel_sizes=[a, b, c, 7]))
       for a, b, c in ((19, 17, 15), (13, 11, 9), (9, 9, 7), (7, 7, 7))},
    "stage-ratio-1-1": dict(table="B", fields=dict(depths=[2, 2, 4, 2], focus_depths=[5, 2])),
    "stage-ratio-1-3": dict(table="B", fields=dict(depths=[2, 2, 2, 2], focus_depths=[7, 2])),
    "crf-2": dict(table="C", fields=dict(context_reduction=2, focus_mlp_ratio=2.0)),
    "crf-6": dict(table="C", fields=dict(context_reduction=6, focus_mlp_ratio=3.5)),
    "crf-8": dict(table="C", fields=dict(context_reduction=8, focus_mlp_ratio=3.75)),
    **{f"aux-{w}": dict(table="D", fields=dict(aux_loss_weight=float(w))) for w in ("0", "0.2", "0.4", "0.8", "1.0")},
    "hierarchical": dict(table="E", fields=dict(
        architecture="hierarchical", hidden_sizes=[64, 112, 256, 360], contmix_key_source="features",
        aux_loss_weight=0.0)),
    "static-baseline": dict(table="E", fields=dict(token_mixer="static")),
    "fusion-affinity": dict(table="F", fields=dict(contmix_query_source="fused", contmix_key_source="fused")),
    "reverse-qk": dict(table="F", fields=dict(contmix_query_source="context", contmix_key_source="features")),
    "no-softmax": dict(table="F", fields=dict(contmix_softmax=False)),
    "no-repconv": dict(table="F", fields=dict(use_lepe=False)),
    "no-small-kernel": dict(table="F", fields=dict(use_small_kernel=False)),
}


class OverLoCKConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of an OverLoCK model (Base-Net, Overview-Net, Focus-Net).

    Args:
        num_channels: input image channels.
        depths: blocks in base stages 1-4 (stages 1-3 form the Base-Net, stage 4 the Overview-Net).
        focus_depths: dynamic (ContMix) blocks of the Focus-Net at stride 16 and stride 32.
        hidden_sizes: widths C1..C4 of the four base stages; the Focus-Net runs at C3 then C4.
        kernel_sizes: large (DilatedReparam) kernel of each base stage; the Focus-Net's stride-16 stage uses
            stage 3's, its stride-32 stage stage 4's, for both the `lepe` branch and ContMix.
        small_kernel_size: the small ContMix kernel.
        focus_num_heads: heads of the stride-16 / stride-32 Focus-Net stages; ContMix uses `2 * heads` groups.
        mlp_ratio: MLP expansion of the base/overview blocks. focus_mlp_ratio: that of the focus blocks.
        context_reduction: the context prior has `C4 // context_reduction` channels (the paper's CRF).
        context_pool_size: side of the adaptive average pool that forms the ContMix keys.
        use_layer_scale: per base stage, whether its blocks carry a LayerScale on the shortcut.
        layer_scale_init_value: initial LayerScale weight.
        projection_dim: width of the classifier's 1x1 projection before pooling.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (base stages, then focus stages).
        aux_loss_weight: weight of the auxiliary Overview-Net cross-entropy in training (0 disables it).
        reparam_branches: DilatedReparam branch table `{K: [[k, r], ...]}` for every large kernel in use.
        reparameterized: whether every DilatedReparam is folded into a single biased depthwise conv.
        layer_norm_eps, batch_norm_eps, initializer_range: numerics and init.
        variant: name of the released variant this configuration matches (`overlock-xt`/`-t`/`-s`/`-b`), if any.
        crop_pct: the evaluation center-crop fraction (resize to `int(224 / crop_pct)`, crop 224).
        out_features, out_indices: for `OverLoCKBackbone`, over `stage_names` (`stem`, `base_stride4`,
            `base_stride8`, `focus_stride16`, `focus_stride32`; see `FEATURE_MAPS`). The former names `stage1`..
            `stage4` are accepted with a FutureWarning.
    Ablation fields (the OverLoCK supplement's Tables A-F; presets in `ABLATIONS`, built on XT by
    :meth:`from_ablation`). Defaults give the released design.
        architecture: `overlock` (Base-Net, Overview-Net, Focus-Net) or `hierarchical` (Table E): a plain
            four-stage pyramid with no Overview-Net, no context and no auxiliary head. Stage `i` holds `depths[i]`
            large-kernel blocks, and stages 3 and 4 are followed in place by `focus_depths` ContMix blocks at
            the same width (so the preset's depths read [2, 2, 3+6, 2+2] = [2, 2, 9, 4]); the ContMix keys
            come from the block's own features (`contmix_key_source="features"`).
        token_mixer: `contmix` or `static` (Table E, "static baseline"): ContMix replaced by static
            depthwise convolutions (with bias) of the same small and large sizes on the same two channel
            halves; the Focus-Net topology and its context channels stay.
        contmix_query_source, contmix_key_source: where ContMix's queries and keys come from: `features`
            (the block's normalized features), `context` (its normalized context channels) or `fused` (the
            fusion of both, i.e. the values; our reading of Table F's "fusion affinity", the paper does not
            say which fused map). Default `features` / `context`; `reverse-qk` is `context` / `features`.
        contmix_softmax: whether the kernel logits (plus the position bias) are normalized by a softmax over
            the taps; without it (Table F) the biased logits weight the taps directly (the PyTorch
            aggregation `contmix.neighborhood_aggregate`; the fused kernel is not used for it).
        use_lepe: whether the Focus-Net blocks keep the static large-kernel `lepe` branch (Table F "w/o RepConv").
        use_small_kernel: whether ContMix's first half uses the small kernel; False gives both halves the
            large kernel (Table F), with two large bias tables and `2 K^2` logits.
        ablation: the name of the preset this configuration was built from, if any.
    Open details and our choices: Table A's presets follow the issue's pattern {[a, b, c], [7], [c, 7]} (the
    Focus-Net's stride-16 kernel is base stage 3's). Table B keeps the 9 blocks of XT's last Base-Net stage and
    first Focus-Net stage; neither 1:1 nor 1:3 divides 9, so we take the nearest splits 4:5 and 2:7. Table C
    keeps the Focus-Net channels and adjusts the Focus-Net MLP width (`focus_mlp_ratio` 2.0 / 3.5 / 3.75 for
    CRF 2 / 6 / 8, chosen on a 0.25 grid to keep the parameters closest to XT's) rather than the block widths,
    which the Base-Net shares.
    """

    model_type = "overlock"

    def __init__(
        self,
        num_channels: int = 3,
        depths: list[int] | None = None,
        focus_depths: list[int] | None = None,
        hidden_sizes: list[int] | None = None,
        kernel_sizes: list[int] | None = None,
        small_kernel_size: int = _RELEASED_COMMON["small_kernel_size"],
        focus_num_heads: list[int] | None = None,
        mlp_ratio: float = _RELEASED_COMMON["mlp_ratio"],
        focus_mlp_ratio: float = _RELEASED_COMMON["focus_mlp_ratio"],
        context_reduction: int = _RELEASED_COMMON["context_reduction"],
        context_pool_size: int = _RELEASED_COMMON["context_pool_size"],
        use_layer_scale: list[bool] | None = None,
        layer_scale_init_value: float = 1.0,
        projection_dim: int = _RELEASED_COMMON["projection_dim"],
        drop_path_rate: float = 0.0,
        aux_loss_weight: float = 0.4,
        reparam_branches: dict | None = None,
        reparameterized: bool = False,
        layer_norm_eps: float = 1e-6,
        batch_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        variant: str | None = None,
        crop_pct: float = VARIANTS["overlock-xt"].crop_pct,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        architecture: str = "overlock",
        token_mixer: str = "contmix",
        contmix_query_source: str = "features",
        contmix_key_source: str = "context",
        contmix_softmax: bool = True,
        use_lepe: bool = True,
        use_small_kernel: bool = True,
        ablation: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        xt = VARIANTS["overlock-xt"].architecture  # the defaults: OverLoCK-XT
        self.num_channels = num_channels
        self.depths = list(depths if depths is not None else xt["depths"])
        self.focus_depths = list(focus_depths if focus_depths is not None else xt["focus_depths"])
        self.hidden_sizes = list(hidden_sizes if hidden_sizes is not None else xt["hidden_sizes"])
        self.kernel_sizes = list(kernel_sizes if kernel_sizes is not None else xt["kernel_sizes"])
        self.small_kernel_size = small_kernel_size
        self.focus_num_heads = list(focus_num_heads if focus_num_heads is not None else xt["focus_num_heads"])
        self.mlp_ratio = mlp_ratio
        self.focus_mlp_ratio = focus_mlp_ratio
        self.context_reduction = context_reduction
        self.context_pool_size = context_pool_size
        self.use_layer_scale = list(use_layer_scale if use_layer_scale is not None else xt["use_layer_scale"])
        self.layer_scale_init_value = layer_scale_init_value
        self.projection_dim = projection_dim
        self.drop_path_rate = drop_path_rate
        self.aux_loss_weight = aux_loss_weight
        self.reparameterized = reparameterized
        self.layer_norm_eps = layer_norm_eps
        self.batch_norm_eps = batch_norm_eps
        self.initializer_range = initializer_range
        self.variant = variant
        self.crop_pct = crop_pct
        self.architecture = architecture
        self.token_mixer = token_mixer
        self.contmix_query_source = contmix_query_source
        self.contmix_key_source = contmix_key_source
        self.contmix_softmax = bool(contmix_softmax)
        self.use_lepe = bool(use_lepe)
        self.use_small_kernel = bool(use_small_kernel)
        self.ablation = ablation
        if reparam_branches is None:
            used = set(self.kernel_sizes)
            reparam_branches = {k: v for k, v in DEFAULT_REPARAM_BRANCHES.items() if k in used}
        # JSON turns keys into strings: normalize to {"K": [[k, r], ...]} for a stable round trip
        self.reparam_branches = {str(int(k)): [list(map(int, b)) for b in v] for k, v in reparam_branches.items()}
        self.stage_names = list(STAGE_NAMES)
        if out_features is None and out_indices is None:
            out_features = STAGE_NAMES[1:]  # the released dense-prediction backbone's four maps
        self._set_backbone_outputs(out_features, out_indices)
        self._validate()

    @property
    def out_features(self) -> list[str]:
        return self._out_features

    @out_features.setter
    def out_features(self, out_features: list[str]) -> None:
        self._set_backbone_outputs(out_features, None)

    def feature_map_channels(self) -> dict[str, int]:
        """Channels of every named feature map (`FEATURE_MAPS` order)."""
        return {name: self.hidden_sizes[info["channels"][0]] + (self.context_dim if info["channels"][1] else 0)
                for name, info in FEATURE_MAPS.items()}

    def _set_backbone_outputs(self, out_features, out_indices) -> None:
        out_features = _current_stage_names(list(out_features) if out_features is not None else None)
        if hasattr(self, "set_output_features_output_indices"):  # transformers >= 5
            self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        else:  # transformers 4.x
            from transformers.utils.backbone_utils import get_aligned_output_features_output_indices

            self._out_features, self._out_indices = get_aligned_output_features_output_indices(
                out_features=out_features, out_indices=out_indices, stage_names=self.stage_names
            )

    # ------------------------------------------------------------------ derived sizes
    @property
    def context_dim(self) -> int:
        """Width `Cc` of the context prior carried through the Focus-Net (0 without an Overview-Net)."""
        if self.architecture == "hierarchical":
            return 0
        return self.hidden_sizes[3] // self.context_reduction

    @property
    def focus_kernel_sizes(self) -> list[int]:
        """Large ContMix/lepe kernel of the stride-16 and stride-32 Focus-Net stages."""
        return [self.kernel_sizes[2], self.kernel_sizes[3]]

    @property
    def num_focus_groups(self) -> list[int]:
        """ContMix groups G per focus stage (two per head: one for each kernel size)."""
        return [2 * heads for heads in self.focus_num_heads]

    def branches_for(self, kernel_size: int) -> list[tuple[int, int]]:
        """DilatedReparam branches `(k, r)` for a large kernel `kernel_size`."""
        return [tuple(b) for b in self.reparam_branches[str(kernel_size)]]

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def fail(message):
            raise ValueError(f"Invalid OverLoCKConfig: {message}")

        for name, expected in (("depths", 4), ("hidden_sizes", 4), ("kernel_sizes", 4), ("use_layer_scale", 4),
                               ("focus_depths", 2), ("focus_num_heads", 2)):
            value = getattr(self, name)
            if len(value) != expected:
                fail(f"`{name}` needs {expected} entries, got {len(value)}: {value}")
        if any(d < 1 for d in self.depths + self.focus_depths):
            fail(f"every stage needs at least one block, got depths={self.depths}, focus_depths={self.focus_depths}")
        if any(c < 1 for c in self.hidden_sizes):
            fail(f"`hidden_sizes` must be positive, got {self.hidden_sizes}")
        if self.hidden_sizes[3] % self.context_reduction:
            fail(f"hidden_sizes[3]={self.hidden_sizes[3]} is not divisible by context_reduction="
                 f"{self.context_reduction}")
        for stage, width in ((0, self.hidden_sizes[2]), (1, self.hidden_sizes[3])):
            groups = 2 * self.focus_num_heads[stage]
            if width % (2 * groups):
                fail(f"focus stage {stage + 1} width {width} must be divisible by 4 * focus_num_heads[{stage}] = "
                     f"{2 * groups} (half the channels split over 2 * heads groups)")
        for k in self.kernel_sizes + [self.small_kernel_size]:
            if k < 3 or k % 2 == 0:
                fail(f"kernel sizes must be odd and >= 3, got {k} (kernel_sizes={self.kernel_sizes}, "
                     f"small_kernel_size={self.small_kernel_size})")
        if not self.reparameterized:
            missing = sorted({k for k in self.kernel_sizes if str(k) not in self.reparam_branches})
            if missing:
                fail(f"large kernel(s) {missing} have no re-parameterization branch table in `reparam_branches` "
                     f"(known: {sorted(int(k) for k in self.reparam_branches)})")
            for k_str, branches in self.reparam_branches.items():
                for k, r in branches:
                    if k % 2 == 0 or r < 1 or r * (k - 1) + 1 > int(k_str):
                        fail(f"branch (k={k}, r={r}) of large kernel {k_str} must have odd k, r >= 1 and fit "
                             f"inside it (r*(k-1)+1 <= {k_str})")
        for name, allowed in (("architecture", ARCHITECTURES), ("token_mixer", TOKEN_MIXERS),
                              ("contmix_query_source", QUERY_SOURCES), ("contmix_key_source", KEY_SOURCES)):
            if getattr(self, name) not in allowed:
                fail(f"`{name}` must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.architecture == "hierarchical" and "context" in (self.contmix_query_source, self.contmix_key_source):
            fail("the `hierarchical` architecture has no context: `contmix_query_source` and `contmix_key_source` "
                 f"must be `features` or `fused`, got {self.contmix_query_source!r} / {self.contmix_key_source!r}")
        if self.aux_loss_weight < 0:
            fail(f"`aux_loss_weight` must be >= 0, got {self.aux_loss_weight}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            fail(f"`drop_path_rate` must be in [0, 1), got {self.drop_path_rate}")
        if not 0.0 < self.crop_pct <= 1.0:
            fail(f"`crop_pct` must be in (0, 1], got {self.crop_pct}")

    # ------------------------------------------------------------------ variants
    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "OverLoCKConfig":
        """Configuration of a released variant (any spelling :func:`normalize_variant_name` accepts: `overlock-xt`,
        `xt`, `OverLoCK_XT`, ...), with its `crop_pct`; keyword arguments override fields (e.g. `num_labels`,
        `drop_path_rate`, `reparameterized`).

        Without `num_labels` (and `id2label`) the head is the released one: 1000 ImageNet-1K classes, with their
        names in `id2label` / `label2id` (read from `imagenet_labels.py`, a module shipped with this file, so
        the Hub copy of it works too). `num_labels=1000` gets the same names.
        """
        variant = VARIANTS[normalize_variant_name(name)]
        fields = dict(variant.architecture, crop_pct=variant.crop_pct, variant=variant.name)
        fields.update(kwargs)
        if "id2label" not in kwargs and fields.setdefault("num_labels", IMAGENET_NUM_LABELS) == IMAGENET_NUM_LABELS:
            fields["id2label"] = imagenet1k_id2label()
            fields["label2id"] = {label: index for index, label in fields["id2label"].items()}
        return cls(**fields)

    @classmethod
    def from_ablation(cls, name: str, **kwargs) -> "OverLoCKConfig":
        """Configuration of an ablation preset of `ABLATIONS` (OverLoCK-XT with the preset's fields);
        keyword arguments override fields."""
        if name not in ABLATIONS:
            raise ValueError(f"Unknown OverLoCK ablation preset {name!r}; known presets: {', '.join(ABLATIONS)}")
        xt = VARIANTS["overlock-xt"]
        fields = dict(xt.architecture, crop_pct=xt.crop_pct)
        fields.update(copy.deepcopy(ABLATIONS[name]["fields"]))
        fields.update(kwargs)
        fields.setdefault("ablation", name)
        return cls(**fields)

    def is_released_design(self) -> bool:
        """Whether every ablation field has its released (default) value."""
        return (self.architecture, self.token_mixer, self.contmix_query_source, self.contmix_key_source,
                self.contmix_softmax, self.use_lepe, self.use_small_kernel) == (
            "overlock", "contmix", "features", "context", True, True, True)

    def matching_variant(self) -> str | None:
        """Name of the released variant whose architecture this configuration has, if any."""
        for name, variant in VARIANTS.items():
            if all(getattr(self, field) == value for field, value in variant.architecture.items()) and (
                self.is_released_design()
            ):
                return name
        return None


__all__ = [
    "ABLATIONS", "DEFAULT_REPARAM_BRANCHES", "FEATURE_MAPS", "IMAGENET_NUM_LABELS", "OverLoCKConfig", "STAGE_NAMES",
    "VARIANTS",
    "Variant", "imagenet1k_id2label", "normalize_variant_name",
]
