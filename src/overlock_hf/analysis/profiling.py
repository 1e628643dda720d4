"""Parameters, MACs, throughput and peak memory of OverLoCK models and their transformers peers.

Conventions (the OverLoCK paper's):

* parameters are those of the re-parameterized inference model (every DilatedReparam folded), without the
  auxiliary Overview-Net head, for 1000 ImageNet classes;
* "FLOPs" are multiply-accumulates (fvcore's convention). `torch.utils.flop_counter.FlopCounterMode` counts
  2 FLOPs per MAC for convolutions and matrix products (norms, activations and element-wise ops are not
  counted), so its total is halved. It does not see the ContMix aggregation (neither the reference's loop
  nor the fused op): :func:`contmix_macs` is added for every call of a :class:`~overlock_hf.contmix.ContMix`
  layer through a forward hook, which fires whatever implementation the layer's forward runs (reference,
  tiled matmul path or kernels-hub fused op), and whatever FlopCounterMode counted inside the layer is
  removed, so every path counts the same. `gmacs_contmix` reports that part separately.
* the ContMix kernel logits are counted as the released model computes them (:func:`kernel_logits_macs`:
  the query-key affinity over the `p x p` pooled context, then the 1x1 projection to the taps), not as this
  package computes them (keys projected first, about 3x fewer MACs), so that the totals stay comparable
  with the paper's Table I.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..contmix import ContMix
from ..modeling_overlock import OverLoCKContMixer, OverLoCKContMixLinear

AUX_HEAD_PREFIX = "aux_classifier."
CONTMIX_LAYERS = (ContMix, OverLoCKContMixLinear)


def contmix_macs(value_shape: tuple[int, ...], kernel_size: int) -> int:
    """MACs of one ContMix aggregation: each of the `B*G*C*H*W` outputs sums `K*K` weighted taps.

    `value_shape` is `(B, G, C, H, W)`. The bias add and the softmax over taps (`B*G*H*W*K*K` each) are
    element-wise work and, as for every other element-wise op, not counted.
    """
    batch, groups, channels, height, width = value_shape
    return batch * groups * channels * height * width * kernel_size * kernel_size


def kernel_logits_macs(batch: int, groups: int, head_dim: int, pixels: int, pool_cells: int, taps: int) -> int:
    """MACs of the released ContMix logits: the affinity `q^T k` (`head_dim` per group, `pool_cells = p*p`
    keys) of every pixel, then the 1x1 conv from the `pool_cells` affinities to the `taps` (both kernels')."""
    return batch * groups * pixels * pool_cells * (head_dim + taps)


def count_parameters(model: nn.Module) -> int:
    """Parameters of `model` without the auxiliary head (`aux_classifier.*`)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(AUX_HEAD_PREFIX))


def count_macs(model: nn.Module, *inputs) -> dict[str, int]:
    """MACs of one eval-mode forward pass `model(*inputs)`, e.g. `pixel_values (B, 3, H, W)` (any device, `meta`
    included).

    Returns `{"total": ..., "contmix": ...}`; `total` includes `contmix`.
    """
    contmix = [0]

    def hook(module, args, output):
        _, _, value, kernel_size = args
        contmix[0] += contmix_macs(tuple(value.shape), int(kernel_size))

    logits = [0]

    def mixer_hook(module, args, output):
        values = args[0]
        height, width = module._working_size(*values.shape[-2:])
        taps = module.small_kernel_size**2 + module.kernel_size**2
        logits[0] += kernel_logits_macs(values.shape[0], module.num_groups, module.channels // 2 // module.num_groups,
                                        height * width, module.context_pool_size**2, taps)

    layers = {name: m for name, m in model.named_modules() if isinstance(m, CONTMIX_LAYERS)}
    mixers = {name: m for name, m in model.named_modules() if isinstance(m, OverLoCKContMixer)}
    handles = [m.register_forward_hook(hook) for m in layers.values()]
    handles += [m.register_forward_hook(mixer_hook) for m in mixers.values()]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # whatever the layer's implementation counted itself (e.g. batched matmuls of a tiled path) is replaced by
    # the formula: FlopCounterMode keys its per-module counts by `<root class>.<qualified name>`
    per_module = counter.get_flop_counts()
    root = type(model).__name__

    def counted(name: str) -> int:
        return sum(per_module.get(f"{root}.{name}" if name else root, {}).values())

    inside = sum(counted(name) for name in layers)
    # the mixers' own matmuls (the logits), without their query/key convs and ContMix layer, likewise
    inside += sum(counted(name) - counted(f"{name}.query") - counted(f"{name}.key") - counted(f"{name}.contmix")
                  for name in mixers)
    return {"total": (counter.get_total_flops() - inside) // 2 + contmix[0] + logits[0], "contmix": contmix[0]}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_peak_bytes(model: nn.Module, pixel_values: torch.Tensor) -> int:
    """Peak bytes held by tensors allocated during one forward pass on CPU (the profiler's memory events,
    in op start order; the weights, allocated before, are not included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, torch.inference_mode():
        model(pixel_values)
    # allocations are attributed to the op that made them (self memory), frees to `[memory]` events
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    held = peak = 0
    for event in events:
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak


def measure_throughput(model: nn.Module, batch_size: int, image_size: int, device: str = "cpu",
                       dtype: torch.dtype = torch.float32, warmup: int = 3, runs: int = 10) -> dict:
    """Images per second of eval-mode inference on random `(batch_size, 3, image_size, image_size)` inputs.

    `warmup` untimed passes, then `runs` timed passes, each bracketed by device synchronisation. Returns the
    median and the spread (first and third quartile, min, max) of the per-run images/s, and the peak memory
    of one pass in MiB (CUDA: `max_memory_allocated` above the weights; CPU: the profiler's tensor memory).
    """
    device = torch.device(device)
    model = model.eval().to(device=device, dtype=dtype)
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(warmup):
            model(pixel_values)
        speeds = []
        for _ in range(runs):
            _synchronize(device)
            start = time.perf_counter()
            model(pixel_values)
            _synchronize(device)
            speeds.append(batch_size / (time.perf_counter() - start))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            model(pixel_values)
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _cpu_peak_bytes(model, pixel_values)
    quartiles = statistics.quantiles(speeds, n=4) if len(speeds) > 1 else [speeds[0]] * 3
    return {
        "images_per_s": statistics.median(speeds),
        "images_per_s_q1": quartiles[0],
        "images_per_s_q3": quartiles[2],
        "images_per_s_min": min(speeds),
        "images_per_s_max": max(speeds),
        "timed_runs": runs,
        "peak_memory_mib": peak / 2**20,
    }


@dataclass
class ProfileRow:
    """One model at one input size. `form` is `reparameterized` (OverLoCK, folded) or `plain`."""

    model: str
    image_size: int
    params_m: float
    gmacs: float
    gmacs_contmix: float
    form: str
    kind: str
    batch_size: int | None = None
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None
    measured: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        row = asdict(self)
        row.update(row.pop("measured"))
        return row
