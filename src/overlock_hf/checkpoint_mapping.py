"""The released OverLoCK state-dict layout and its mapping onto the transformers model.

Three steps, each usable on its own: :func:`unwrap_state_dict` (find the weights inside a checkpoint file's
dict), :func:`config_from_official_state_dict` (infer every architectural field from the shapes), and
:func:`map_official_key` (official key -> our key, with the reshape the classifier heads need).
"""

from __future__ import annotations

import re

import torch

from .configuration_overlock import DEFAULT_REPARAM_BRANCHES, VARIANTS, OverLoCKConfig, normalize_variant_name


class CheckpointError(ValueError):
    """A checkpoint that is not a usable OverLoCK state dict (corrupt, wrong layout, missing or extra keys)."""


# ------------------------------------------------------------------------------------------------ unwrapping
def unwrap_state_dict(checkpoint: dict, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: bare, or under `state_dict` / `model` (`state_dict_ema` with
    `use_ema`), with any `module.` prefixes removed."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    if use_ema:
        if "state_dict_ema" not in checkpoint:
            raise CheckpointError(f"--ema asked for `state_dict_ema`, but the checkpoint only has {sorted(checkpoint)}")
        state = checkpoint["state_dict_ema"]
    else:
        state = checkpoint
        for wrapper in ("state_dict", "model"):
            if isinstance(checkpoint.get(wrapper), dict):
                state = checkpoint[wrapper]
                break
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"checkpoint entries are not tensors: {not_tensors[:10]}")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


# ------------------------------------------------------------------------------------------------ config inference
def _count_blocks(state: dict, prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def _shape(state: dict, key: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"not an OverLoCK checkpoint in the official layout: key `{key}` is missing")
    return state[key].shape


def _branch_tables(state: dict, kernel_sizes: list[int]) -> dict[int, list[tuple[int, int]]]:
    """The DilatedReparam branches present for each large kernel, in the official table order when it fits."""
    found: dict[int, list[tuple[int, int]]] = {}
    key_pattern = re.compile(r"^(.*)\.dil_(?:conv|bn)_k(\d+)_(\d+)\.")
    for key in state:
        match = key_pattern.match(key)
        if not match:
            continue
        origin = state.get(f"{match.group(1)}.lk_origin.weight")
        if origin is None:
            continue
        branches = found.setdefault(int(origin.shape[-1]), [])
        branch = (int(match.group(2)), int(match.group(3)))
        if branch not in branches:
            branches.append(branch)
    tables = {}
    for k in sorted(set(kernel_sizes)):
        default = DEFAULT_REPARAM_BRANCHES.get(k)
        seen = found.get(k)
        if seen is None or (default is not None and set(seen) == set(default)):
            if default is not None:
                tables[k] = list(default)
        else:
            tables[k] = seen
    return tables


def config_from_official_state_dict(state: dict[str, torch.Tensor], **overrides) -> OverLoCKConfig:
    """Every architectural field of an official-layout state dict, inferred from its keys and shapes."""
    widths = [
        _shape(state, "patch_embed1.9.weight")[0],
        _shape(state, "patch_embed2.0.weight")[0],
        _shape(state, "patch_embed3.0.weight")[0],
        _shape(state, "patch_embed4.0.weight")[0],
    ]
    depths = [_count_blocks(state, f"blocks{i}") for i in range(1, 5)]
    focus_depths = [_count_blocks(state, "sub_blocks3"), _count_blocks(state, "sub_blocks4")]
    if min(depths + focus_depths) == 0:
        raise CheckpointError(f"not an OverLoCK checkpoint: block counts {depths} / {focus_depths} include an empty stage")
    kernel_sizes = [_shape(state, f"blocks{i}.0.proj.1.lk_origin.weight")[-1] for i in range(1, 5)]
    rpb_small = _shape(state, "sub_blocks3.0.rpb1")
    heads = [_shape(state, "sub_blocks3.0.rpb1")[0] // 2, _shape(state, "sub_blocks4.0.rpb1")[0] // 2]
    context_dim = _shape(state, "high_level_proj.weight")[0]
    reparameterized = "blocks1.0.proj.1.origin_bn.weight" not in state
    fields = dict(
        num_channels=int(_shape(state, "patch_embed1.0.weight")[1]),
        depths=depths,
        focus_depths=focus_depths,
        hidden_sizes=[int(w) for w in widths],
        kernel_sizes=[int(k) for k in kernel_sizes],
        small_kernel_size=int((rpb_small[-1] + 1) // 2),
        focus_num_heads=[int(h) for h in heads],
        mlp_ratio=_shape(state, "blocks1.0.proj.4.weight")[0] / widths[0],
        focus_mlp_ratio=_shape(state, "sub_blocks3.0.mlp.0.weight")[0] / widths[2],
        context_reduction=int(widths[3] // context_dim),
        context_pool_size=int(round(_shape(state, "sub_blocks3.0.weight_proj.weight")[1] ** 0.5)),
        use_layer_scale=[f"blocks{i}.0.ls.weight" in state for i in range(1, 5)],
        projection_dim=int(_shape(state, "head.0.weight")[0]),
        num_labels=int(_shape(state, "head.4.weight")[0]),
        reparam_branches=_branch_tables(state, [int(k) for k in kernel_sizes]),
        reparameterized=reparameterized,
    )
    fields.update(overrides)
    return OverLoCKConfig(**fields)


def resolve_variant(config: OverLoCKConfig, insist: str | None = None) -> OverLoCKConfig:
    """Record the released variant the architecture matches (and its crop_pct); `insist` makes a mismatch an error."""
    found = config.matching_variant()
    if insist is not None:
        try:
            key = normalize_variant_name(insist)
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        if found != key:
            raise CheckpointError(
                f"the checkpoint is not {key}: its architecture is depths={config.depths}, "
                f"focus_depths={config.focus_depths}, hidden_sizes={config.hidden_sizes}, "
                f"focus_num_heads={config.focus_num_heads} ({'matches ' + found if found else 'no released variant'})"
            )
    if found is not None:
        config.variant = found
        config.crop_pct = VARIANTS[found].crop_pct
    return config


# ------------------------------------------------------------------------------------------------ key mapping
_STEM = {"0": "conv1.0", "1": "conv1.1", "3": "conv2.0", "4": "conv2.1", "6": "conv3.0", "7": "conv3.1",
         "9": "conv4.0", "10": "conv4.1"}

_REPCONV_PARTS = [
    (r"dwconv\.", "dwconv."),
    (r"proj\.0\.", "norm."),
    (r"proj\.1\.", "large_kernel."),
    (r"proj\.2\.", "large_kernel_norm."),
    (r"proj\.3\.proj\.1\.", "se.fc1."),
    (r"proj\.3\.proj\.3\.", "se.fc2."),
    (r"proj\.4\.", "fc1."),
    (r"proj\.6\.", "mlp_dwconv."),
    (r"proj\.7\.", "grn."),
    (r"proj\.8\.", "fc2."),
    (r"ls\.", "layer_scale."),
]

_DYNAMIC_PARTS = [
    (r"rpb1$", "mixer.rpb_small"),
    (r"rpb2$", "mixer.rpb_large"),
    (r"x_scale\.", "context_scale."),
    (r"h_scale\.", "prior_scale."),
    (r"dwconv1\.", "dwconv1."),
    (r"norm1\.", "norm1."),
    (r"fusion\.0\.", "fusion_dwconv."),
    (r"fusion\.1\.", "fusion_norm."),
    (r"fusion\.3\.", "fusion_proj."),
    (r"fusion\.4\.", "fusion_grn."),
    (r"weight_query\.0\.", "mixer.query.0."),
    (r"weight_query\.1\.", "mixer.query.1."),
    (r"weight_key\.1\.", "mixer.key.0."),
    (r"weight_key\.2\.", "mixer.key.1."),
    (r"weight_proj\.", "mixer.kernel_proj."),
    (r"dyconv_proj\.0\.", "contmix_proj.0."),
    (r"dyconv_proj\.1\.", "contmix_proj.1."),
    (r"lepe\.0\.", "lepe."),
    (r"lepe\.1\.", "lepe_norm."),
    (r"se_layer\.proj\.1\.", "se.fc1."),
    (r"se_layer\.proj\.3\.", "se.fc2."),
    (r"gate\.0\.", "gate.0."),
    (r"gate\.1\.", "gate.1."),
    (r"proj\.0\.", "proj_norm."),
    (r"proj\.1\.", "proj."),
    (r"dwconv2\.", "dwconv2."),
    (r"norm2\.", "norm2."),
    (r"mlp\.0\.", "fc1."),
    (r"mlp\.2\.", "mlp_dwconv."),
    (r"mlp\.3\.", "grn."),
    (r"mlp\.4\.", "fc2."),
    (r"ls1\.", "layer_scale1."),
    (r"ls2\.", "layer_scale2."),
]

_RESHAPED_TO_LINEAR = ("classifier.fc.weight", "aux_classifier.fc.weight", "kernel_proj.weight")


def _map_reparam_part(rest: str, branches: list[tuple[int, int]]) -> str | None:
    """Inside a DilatedReparam: `lk_origin.` / `origin_bn.` / `dil_conv_k{k}_{r}.` / `dil_bn_k{k}_{r}.`."""
    if rest.startswith("lk_origin."):
        return "large_kernel." + rest[len("lk_origin.") :]
    if rest.startswith("origin_bn."):
        return "large_kernel_norm." + rest[len("origin_bn.") :]
    match = re.match(r"dil_(conv|bn)_k(\d+)_(\d+)\.(.*)$", rest)
    if match and (int(match.group(2)), int(match.group(3))) in branches:
        index = branches.index((int(match.group(2)), int(match.group(3))))
        return f"branches.{index}.{'conv' if match.group(1) == 'conv' else 'norm'}.{match.group(4)}"
    return None


def _map_block(rest: str, parts, branches) -> str | None:
    for pattern, replacement in parts:
        match = re.match(pattern, rest)
        if match:
            tail = rest[match.end() :]
            if replacement in ("large_kernel.", "lepe."):
                inner = _map_reparam_part(tail, branches)
                return None if inner is None else replacement + inner
            return replacement + tail
    return None


def map_official_key(key: str, config: OverLoCKConfig) -> str | None:
    """Our key (in `OverLoCKForImageClassification`) for an official key, or None if it has no place."""
    if match := re.match(r"patch_embed1\.(\d+)\.(.*)$", key):
        stem = _STEM.get(match.group(1))
        return f"overlock.embeddings.{stem}.{match.group(2)}" if stem else None
    if match := re.match(r"patch_embed([234])\.([01])\.(.*)$", key):
        stage = int(match.group(1)) - 1
        owner = "overview_net" if stage == 3 else f"base_net.stages.{stage}"
        return f"overlock.{owner}.downsample.{match.group(2)}.{match.group(3)}"
    if match := re.match(r"blocks([1234])\.(\d+)\.(.*)$", key):
        stage = int(match.group(1)) - 1
        branches = config.branches_for(config.kernel_sizes[stage]) if str(config.kernel_sizes[stage]) in config.reparam_branches else []
        inner = _map_block(match.group(3), _REPCONV_PARTS, branches)
        owner = "overview_net" if stage == 3 else f"base_net.stages.{stage}"
        return None if inner is None else f"overlock.{owner}.blocks.{match.group(2)}.{inner}"
    if match := re.match(r"sub_blocks([34])\.(\d+)\.(.*)$", key):
        focus_stage = int(match.group(1)) - 3
        kernel = config.focus_kernel_sizes[focus_stage]
        branches = config.branches_for(kernel) if str(kernel) in config.reparam_branches else []
        inner = _map_block(match.group(3), _DYNAMIC_PARTS, branches)
        owner = "stage16" if focus_stage == 0 else "stage32"
        return None if inner is None else f"overlock.focus_net.{owner}.{match.group(2)}.{inner}"
    if key.startswith("high_level_proj."):
        return "overlock.focus_net.context_prior." + key[len("high_level_proj.") :]
    if match := re.match(r"patch_embedx\.(x_proj|h_proj)\.([01])\.(.*)$", key):
        target = "features" if match.group(1) == "x_proj" else "context"
        return f"overlock.focus_net.context_downsample.{target}.{match.group(2)}.{match.group(3)}"
    if match := re.match(r"head\.(\d+)\.(.*)$", key):
        target = {"0": "classifier.proj.0", "1": "classifier.proj.1", "4": "classifier.fc"}.get(match.group(1))
        return f"{target}.{match.group(2)}" if target else None
    if match := re.match(r"aux_head\.(\d+)\.(.*)$", key):
        target = {"0": "aux_classifier.norm", "2": "aux_classifier.fc"}.get(match.group(1))
        return f"{target}.{match.group(2)}" if target else None
    return None


def convert_official_state_dict(
    state: dict[str, torch.Tensor], config: OverLoCKConfig, expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map an official state dict onto `expected` (our model's state dict); raise `CheckpointError` naming every
    unexpected (no place in our model), missing and mis-shaped key."""
    converted, unexpected, mis_shaped, sources = {}, [], [], {}
    for key, tensor in state.items():
        target = map_official_key(key, config)
        if target is None or target not in expected:
            unexpected.append(key)
            continue
        if target in sources:
            raise CheckpointError(f"keys {sources[target]} and {key} both map to {target}")
        sources[target] = key
        if target.endswith(_RESHAPED_TO_LINEAR) and tensor.dim() == 4:  # official 1x1 convs, our linears
            tensor = tensor.flatten(1)
        if tuple(tensor.shape) != tuple(expected[target].shape):
            mis_shaped.append(f"{key} {tuple(tensor.shape)} (expected {tuple(expected[target].shape)} for {target})")
            continue
        converted[target] = tensor
    missing = [k for k in expected if k not in converted and not any(m.endswith(f"for {k})") for m in mis_shaped)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if mis_shaped:
        problems.append(f"mis-shaped keys ({len(mis_shaped)}): {', '.join(mis_shaped)}")
    if problems:
        raise CheckpointError("the checkpoint does not fit the OverLoCK model:\n  " + "\n  ".join(problems))
    return converted
