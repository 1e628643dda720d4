// Fused ContMix on the CPU: relative-position bias + softmax over the K*K taps + clamped-window aggregation.
//
// Work is split with at::parallel_for (OpenMP in the CPU builds of torch) over (batch * group * row) items.
// To make the innermost loop a contiguous, vectorizable loop over channels, value (and grad_out in the
// backward) is first transposed once from the grouped NCHW layout (B, G, C, H, W) to a channels-last scratch
// (B, G, H, W, C) in the accumulation type; each output row is accumulated in a (W, C) buffer and written
// back to NCHW. The softmax weights of one pixel live in a K*K buffer. No buffer is K*K*C sized: the largest
// temporaries are the channels-last copies (the size of value) and, in the backward only, the float32
// attention and logit gradients (the size of logits). Accumulation is float32 for float16/bfloat16 inputs,
// float64 for float64 inputs.
//
// The backward is free of races and atomics: the value gradient is gathered over the queries whose windows
// contain each key (the inverse neighborhood) and the bias gradient is a per-(group, offset) reduction.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "contmix_checks.h"
#include "contmix_common.h"
#include "torch_binding.h"

namespace {

struct Dims {
  int64_t batch_groups;  // B * G
  int groups, channels, height, width, k;
};

// (BG, C, H, W) -> (BG, H, W, C) in the accumulation type.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> to_channels_last(const scalar_t* src, const Dims& d) {
  const int64_t hw = int64_t(d.height) * d.width;
  std::vector<acc_t> dst(size_t(d.batch_groups * hw * d.channels));
  at::parallel_for(0, d.batch_groups * d.height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bg = item / d.height, row = item % d.height;
      for (int c = 0; c < d.channels; ++c) {
        const scalar_t* s = src + (bg * d.channels + c) * hw + row * d.width;
        acc_t* t = dst.data() + (bg * hw + row * d.width) * d.channels + c;
        for (int col = 0; col < d.width; ++col) t[int64_t(col) * d.channels] = static_cast<acc_t>(s[col]);
      }
    }
  });
  return dst;
}

// Writes a (W, C) row buffer into row `row` of the (C, H, W) plane group `bg` of an NCHW tensor.
template <typename scalar_t, typename acc_t>
void store_row(const acc_t* row_buffer, scalar_t* dst, int64_t bg, int row, const Dims& d) {
  const int64_t hw = int64_t(d.height) * d.width;
  for (int c = 0; c < d.channels; ++c) {
    scalar_t* t = dst + (bg * d.channels + c) * hw + int64_t(row) * d.width;
    for (int col = 0; col < d.width; ++col) t[col] = static_cast<scalar_t>(row_buffer[int64_t(col) * d.channels + c]);
  }
}

// Softmax over the taps of query (i, j) of group g: weights[t] for t = a*K + b.
template <typename scalar_t, typename acc_t>
void tap_softmax(const scalar_t* pixel_logits, const scalar_t* table, int i, int j, int si, int sj, const Dims& d,
                 acc_t* weights) {
  const int k = d.k, span = 2 * k - 1;
  acc_t max_logit = -std::numeric_limits<acc_t>::infinity();
  for (int a = 0; a < k; ++a) {
    const scalar_t* bias_row = table + contmix::bias_offset(i, si + a, k) * span + contmix::bias_offset(j, sj, k);
    for (int b = 0; b < k; ++b) {
      const acc_t x = static_cast<acc_t>(pixel_logits[a * k + b]) + static_cast<acc_t>(bias_row[b]);
      weights[a * k + b] = x;
      max_logit = std::max(max_logit, x);
    }
  }
  acc_t total = 0;
  for (int t = 0; t < k * k; ++t) {
    weights[t] = std::exp(weights[t] - max_logit);
    total += weights[t];
  }
  const acc_t inverse = acc_t(1) / total;
  for (int t = 0; t < k * k; ++t) weights[t] *= inverse;
}

// e^x for x in the softmax's range (x <= 0 after the max shift), for float, in plain arithmetic so that a
// `#pragma omp simd` loop vectorizes with the baseline instruction set (libm's expf is a scalar call; the clamp
// needs -fno-trapping-math to become a vector select, see kernel_builder.py). Range
// reduction x = n ln2 + r (|r| <= ln2/2, ln2 split in two for accuracy), a degree-7 polynomial for e^r, and 2^n
// assembled in the exponent bits. Relative error about 2e-7 on [-87, 0]; below -87 it returns e^-87 (~1.6e-38)
// instead of a smaller number, which cannot matter next to the max term, 1.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln2) by the magic number
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t exponent_bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, exponent_bits);
}

inline float exp_nonpositive_acc(float x) { return exp_nonpositive(x); }
inline double exp_nonpositive_acc(double x) { return std::exp(x); }

// Softmax weights of every query of row i of plane group bg: weights[j * K*K + t]. Done for the whole row at
// once so that the exponentials run as one long vectorizable loop (per-pixel loops of K*K are too short).
template <typename scalar_t, typename acc_t>
void row_softmax(const scalar_t* row_logits, const scalar_t* table, int i, int si, const Dims& d, acc_t* weights) {
  const int k = d.k, kk = k * k, span = 2 * k - 1, W = d.width;
  for (int j = 0; j < W; ++j) {
    const int sj = contmix::window_start(j, W, k);
    const scalar_t* pixel_logits = row_logits + int64_t(j) * kk;
    acc_t* w = weights + int64_t(j) * kk;
    for (int a = 0; a < k; ++a) {
      const scalar_t* bias_row = table + contmix::bias_offset(i, si + a, k) * span + contmix::bias_offset(j, sj, k);
      for (int b = 0; b < k; ++b) {
        w[a * k + b] = static_cast<acc_t>(pixel_logits[a * k + b]) + static_cast<acc_t>(bias_row[b]);
      }
    }
    acc_t max_logit = w[0];
#pragma omp simd reduction(max : max_logit)
    for (int t = 1; t < kk; ++t) max_logit = w[t] > max_logit ? w[t] : max_logit;
#pragma omp simd
    for (int t = 0; t < kk; ++t) w[t] -= max_logit;
  }
  const int64_t n = int64_t(W) * kk;
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) weights[t] = exp_nonpositive_acc(weights[t]);
  for (int j = 0; j < W; ++j) {
    acc_t* w = weights + int64_t(j) * kk;
    acc_t total = 0;
#pragma omp simd reduction(+ : total)
    for (int t = 0; t < kk; ++t) total += w[t];
    const acc_t inverse = acc_t(1) / total;
#pragma omp simd
    for (int t = 0; t < kk; ++t) w[t] *= inverse;
  }
}

// o[0:C] = sum over the K x K window taps of w[tap] * value[tap, 0:C] (channels-last plane). `kChannels` > 0 makes
// C a compile-time constant: for the channel counts per group of the released variants (8, 10, 14, 16) the
// channel loop then unrolls into straight vector code instead of a short runtime-length loop per tap.
template <int kChannels, typename acc_t>
inline void aggregate_window(const acc_t* w, const acc_t* plane, int si, int sj, int k, int width, int channels,
                             acc_t* o) {
  const int C = kChannels > 0 ? kChannels : channels;
  std::fill(o, o + C, acc_t(0));
  for (int a = 0; a < k; ++a) {
    const acc_t* window_row = plane + (int64_t(si + a) * width + sj) * C;  // K contiguous taps of C channels
    for (int b = 0; b < k; ++b) {
      const acc_t wt = w[a * k + b];
      const acc_t* v = window_row + int64_t(b) * C;
#pragma omp simd
      for (int c = 0; c < C; ++c) o[c] += wt * v[c];
    }
  }
}

// Calls body(std::integral_constant<int, C>{}) for the channel counts above, body(integral_constant<int, 0>) else.
template <typename Body>
void with_channel_count(int channels, Body&& body) {
  switch (channels) {
    case 8: return body(std::integral_constant<int, 8>{});
    case 10: return body(std::integral_constant<int, 10>{});
    case 14: return body(std::integral_constant<int, 14>{});
    case 16: return body(std::integral_constant<int, 16>{});
    default: return body(std::integral_constant<int, 0>{});
  }
}

template <typename scalar_t>
void forward_impl(const scalar_t* logits, const scalar_t* rpb, const scalar_t* value, scalar_t* out, const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int k = d.k, kk = k * k, span = 2 * k - 1, C = d.channels, W = d.width;
  const std::vector<acc_t> value_cl = to_channels_last<scalar_t, acc_t>(value, d);
  with_channel_count(C, [&](auto fixed_channels) {
    constexpr int kChannels = decltype(fixed_channels)::value;
    at::parallel_for(0, d.batch_groups * d.height, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> weights(size_t(W) * kk), row(size_t(W) * C);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bg = item / d.height;
        const int i = int(item % d.height), si = contmix::window_start(i, d.height, k);
        const scalar_t* table = rpb + (bg % d.groups) * span * span;
        const acc_t* plane = value_cl.data() + bg * d.height * W * C;
        row_softmax(logits + (bg * d.height + i) * W * kk, table, i, si, d, weights.data());
        for (int j = 0; j < W; ++j) {
          aggregate_window<kChannels>(weights.data() + int64_t(j) * kk, plane, si, contmix::window_start(j, W, k), k,
                                      W, C, row.data() + int64_t(j) * C);
        }
        store_row(row.data(), out, bg, i, d);
      }
    });
  });
}

template <typename scalar_t>
void backward_impl(const scalar_t* grad_out, const scalar_t* logits, const scalar_t* rpb, const scalar_t* value,
                   scalar_t* grad_logits, scalar_t* grad_rpb, scalar_t* grad_value, const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int k = d.k, kk = k * k, span = 2 * k - 1, C = d.channels, H = d.height, W = d.width;
  const int64_t pixels = int64_t(H) * W;
  const std::vector<acc_t> value_cl = to_channels_last<scalar_t, acc_t>(value, d);
  const std::vector<acc_t> grad_cl = to_channels_last<scalar_t, acc_t>(grad_out, d);
  // attention weights and float32 logit gradients: written in full before they are read, so left uninitialised
  const size_t attn_size = size_t(d.batch_groups * pixels * kk);
  std::unique_ptr<acc_t[]> attn(new acc_t[attn_size]);
  std::unique_ptr<acc_t[]> grad_logits_acc(std::is_same_v<scalar_t, acc_t> ? nullptr : new acc_t[attn_size]);
  acc_t* glog = nullptr;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    glog = grad_logits;
  } else {
    glog = grad_logits_acc.get();
  }

  // 1. attention (recomputed) and logit gradient: dL/dlogit = attn * (dL/dattn - sum(attn * dL/dattn)).
  //    C is a compile-time constant for the released variants' channel counts (see aggregate_window).
  with_channel_count(C, [&](auto fixed_channels) {
    constexpr int kChannels = decltype(fixed_channels)::value;
    const int channels = kChannels > 0 ? kChannels : C;
    at::parallel_for(0, d.batch_groups * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> grad_attn(kk);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bg = item / H;
        const int i = int(item % H), si = contmix::window_start(i, H, k);
        const scalar_t* table = rpb + (bg % d.groups) * span * span;
        const acc_t* plane = value_cl.data() + bg * pixels * channels;
        for (int j = 0; j < W; ++j) {
          const int sj = contmix::window_start(j, W, k);
          const int64_t pixel = (bg * H + i) * W + j;
          acc_t* weights = attn.get() + pixel * kk;
          tap_softmax(logits + pixel * kk, table, i, j, si, sj, d, weights);
          const acc_t* g = grad_cl.data() + pixel * channels;
          acc_t weighted = 0;
          for (int a = 0; a < k; ++a) {
            const acc_t* window_row = plane + (int64_t(si + a) * W + sj) * channels;
            for (int b = 0; b < k; ++b) {
              const acc_t* v = window_row + int64_t(b) * channels;
              acc_t dot = 0;
#pragma omp simd reduction(+ : dot)
              for (int c = 0; c < channels; ++c) dot += g[c] * v[c];
              grad_attn[a * k + b] = dot;
              weighted += weights[a * k + b] * dot;
            }
          }
          acc_t* gl = glog + pixel * kk;
          for (int t = 0; t < kk; ++t) gl[t] = weights[t] * (grad_attn[t] - weighted);
          if constexpr (!std::is_same_v<scalar_t, acc_t>) {
            for (int t = 0; t < kk; ++t) grad_logits[pixel * kk + t] = static_cast<scalar_t>(gl[t]);
          }
        }
      }
    });
  });

  // 2. bias gradient: every tap of every query adds its logit gradient to the table entry it read (row
  //    K-1 + si+a - i, column K-1 + sj+b - j): one pass over the logit gradients, in order. One group per work
  //    item, so each table has one writer (no atomics) and the sums are deterministic.
  const int64_t batch = d.batch_groups / d.groups;
  at::parallel_for(0, d.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> table(size_t(span) * span);
    for (int64_t g = begin; g < end; ++g) {
      std::fill(table.begin(), table.end(), acc_t(0));
      for (int64_t b = 0; b < batch; ++b) {
        for (int i = 0; i < H; ++i) {
          const int si = contmix::window_start(i, H, k);
          for (int j = 0; j < W; ++j) {
            const int sj = contmix::window_start(j, W, k);
            const acc_t* gl = glog + (((b * d.groups + g) * H + i) * W + j) * kk;
            for (int a = 0; a < k; ++a) {
              acc_t* row = table.data() + int64_t(k - 1 + si + a - i) * span + (k - 1 + sj - j);
#pragma omp simd
              for (int c = 0; c < k; ++c) row[c] += gl[a * k + c];
            }
          }
        }
      }
      for (int64_t e = 0; e < int64_t(span) * span; ++e) grad_rpb[g * span * span + e] = static_cast<scalar_t>(table[e]);
    }
  });

  // 3. value gradient: key (p, q) gathers attn * grad_out over the queries whose windows contain it.
  with_channel_count(C, [&](auto fixed_channels) {
    constexpr int kChannels = decltype(fixed_channels)::value;
    const int channels = kChannels > 0 ? kChannels : C;
    at::parallel_for(0, d.batch_groups * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> row(size_t(W) * channels);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bg = item / H;
        const int p = int(item % H);
        const int i_first = contmix::inverse_first(p, H, k), i_last = contmix::inverse_last(p, H, k);
        for (int q = 0; q < W; ++q) {
          const int j_first = contmix::inverse_first(q, W, k), j_last = contmix::inverse_last(q, W, k);
          acc_t* o = row.data() + int64_t(q) * channels;
          std::fill(o, o + channels, acc_t(0));
          for (int i = i_first; i <= i_last; ++i) {
            const int a = p - contmix::window_start(i, H, k);
            for (int j = j_first; j <= j_last; ++j) {
              const int64_t pixel = (bg * H + i) * W + j;
              const acc_t wt = attn[pixel * kk + a * k + (q - contmix::window_start(j, W, k))];
              const acc_t* g = grad_cl.data() + pixel * channels;
#pragma omp simd
              for (int c = 0; c < channels; ++c) o[c] += wt * g[c];
            }
          }
        }
        store_row(row.data(), grad_value, bg, p, d);
      }
    });
  });
}

Dims dims_of(const at::Tensor& value, int64_t k) {
  return Dims{value.size(0) * value.size(1), int(value.size(1)), int(value.size(2)), int(value.size(3)),
              int(value.size(4)), int(k)};
}

}  // namespace

at::Tensor contmix_forward_cpu(const at::Tensor& logits, const at::Tensor& rpb, const at::Tensor& value,
                               int64_t kernel_size) {
  contmix::check_inputs(logits, rpb, value, kernel_size, c10::DeviceType::CPU);
  const at::Tensor logits_c = logits.contiguous(), rpb_c = rpb.contiguous(), value_c = value.contiguous();
  at::Tensor out = at::empty(value.sizes(), value.options());
  const Dims d = dims_of(value, kernel_size);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "contmix_forward_cpu", [&] {
    forward_impl<scalar_t>(logits_c.const_data_ptr<scalar_t>(), rpb_c.const_data_ptr<scalar_t>(),
                           value_c.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), d);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contmix_backward_cpu(const at::Tensor& grad_out,
                                                                    const at::Tensor& logits, const at::Tensor& rpb,
                                                                    const at::Tensor& value, int64_t kernel_size) {
  contmix::check_inputs(logits, rpb, value, kernel_size, c10::DeviceType::CPU);
  TORCH_CHECK(grad_out.sizes() == value.sizes() && grad_out.scalar_type() == value.scalar_type() &&
                  grad_out.device() == value.device(),
              "ContMix grad_out must match value (", value.sizes(), ", ", value.scalar_type(), "), got ",
              grad_out.sizes(), ", ", grad_out.scalar_type());
  const at::Tensor grad_c = grad_out.contiguous(), logits_c = logits.contiguous(), rpb_c = rpb.contiguous(),
                   value_c = value.contiguous();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  at::Tensor grad_rpb = at::empty(rpb.sizes(), rpb.options());
  at::Tensor grad_value = at::empty(value.sizes(), value.options());
  const Dims d = dims_of(value, kernel_size);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "contmix_backward_cpu", [&] {
    backward_impl<scalar_t>(grad_c.const_data_ptr<scalar_t>(), logits_c.const_data_ptr<scalar_t>(),
                            rpb_c.const_data_ptr<scalar_t>(), value_c.const_data_ptr<scalar_t>(),
                            grad_logits.mutable_data_ptr<scalar_t>(), grad_rpb.mutable_data_ptr<scalar_t>(),
                            grad_value.mutable_data_ptr<scalar_t>(), d);
  });
  return {grad_logits, grad_rpb, grad_value};
}
