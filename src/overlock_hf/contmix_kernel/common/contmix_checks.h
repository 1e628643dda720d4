// Input validation shared by the CPU and CUDA entry points: every misuse raises a c10::Error (a Python
// RuntimeError) with a message naming the offending input instead of reading out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace contmix {

inline void check_inputs(const at::Tensor& logits, const at::Tensor& rpb, const at::Tensor& value, int64_t k,
                         c10::DeviceType device_type) {
  TORCH_CHECK(k >= 3 && k % 2 == 1, "ContMix kernel_size must be an odd integer >= 3, got ", k);
  TORCH_CHECK(value.dim() == 5, "ContMix value must be (B, G, C, H, W), got ", value.sizes());
  const int64_t b = value.size(0), g = value.size(1), h = value.size(3), w = value.size(4);
  TORCH_CHECK(h >= k && w >= k, "ContMix needs a feature map at least ", k, "x", k, " for kernel_size=", k,
              ", got ", h, "x", w);
  TORCH_CHECK(logits.dim() == 5 && logits.size(0) == b && logits.size(1) == g && logits.size(2) == h &&
                  logits.size(3) == w && logits.size(4) == k * k,
              "ContMix logits must be (B, G, H, W, K*K) = (", b, ", ", g, ", ", h, ", ", w, ", ", k * k,
              "), got ", logits.sizes());
  TORCH_CHECK(rpb.dim() == 3 && rpb.size(0) == g && rpb.size(1) == 2 * k - 1 && rpb.size(2) == 2 * k - 1,
              "ContMix rpb must be (G, 2K-1, 2K-1) = (", g, ", ", 2 * k - 1, ", ", 2 * k - 1, "), got ",
              rpb.sizes());
  TORCH_CHECK(logits.scalar_type() == value.scalar_type() && rpb.scalar_type() == value.scalar_type(),
              "ContMix inputs must share one dtype, got logits ", logits.scalar_type(), ", rpb ",
              rpb.scalar_type(), ", value ", value.scalar_type());
  const auto dtype = value.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "ContMix supports float32, float64, float16 and bfloat16, got ", dtype);
  TORCH_CHECK(logits.device() == value.device() && rpb.device() == value.device(),
              "ContMix inputs must be on one device, got logits on ", logits.device(), ", rpb on ", rpb.device(),
              ", value on ", value.device());
  TORCH_CHECK(value.device().type() == device_type, "ContMix ", c10::DeviceTypeName(device_type),
              " kernel called with tensors on ", value.device());
  TORCH_CHECK(value.numel() < (int64_t{1} << 31) && logits.numel() < (int64_t{1} << 31),
              "ContMix tensors must have fewer than 2^31 elements");
}

}  // namespace contmix
