// Fused ContMix on CUDA: relative-position bias + softmax over the K*K taps + clamped-window aggregation.
//
// Grid: x = (batch*group) * column tiles (up to 2^31 - 1 blocks, so any batch the CPU path accepts), y = row.
//
// Forward: one block per (batch*group, row, tile of columns). Each warp computes the softmax of one pixel at a
// time into shared memory (tile x K*K, float32 for float16/bfloat16/float32 inputs), then the threads of the
// block aggregate, one (pixel, channel) pair per thread with neighbouring threads on neighbouring columns so
// that value reads are coalesced. Nothing K*K*C sized is materialized.
//
// Backward, deterministic and without atomics:
//   1. per (batch*group, row, column tile): recompute the softmax, dL/dattn[t] = <grad_out, value tap t> over
//      channels, dL/dlogit = attn * (dL/dattn - sum attn * dL/dattn); attention and logit gradients are kept
//      in float32 scratch tensors the size of logits.
//   2. bias gradient: one block per table entry (group, dy, dx) sums the logit gradients of the taps that
//      read it, with a fixed-order tree reduction. The queries that read an entry form a rectangle (the tap
//      index is monotone in the query position, common/contmix_common.h), so only those are visited.
//   3. value gradient: one thread per (value pixel, chunk of kChannelChunk channels) gathers attn * grad_out
//      over the queries whose windows contain that key (the inverse neighbourhood); each attention weight
//      is read once per chunk instead of once per channel.
//
// Kernel sizes: forward and backward accept the same maximum K (the backward's shared-memory bound).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <tuple>

#include "contmix_checks.h"
#include "contmix_common.h"
#include "torch_binding.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kMaxTile = 32;
constexpr size_t kSharedBytes = 48 * 1024;
constexpr int kChannelChunk = 8;

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }

template <typename acc_t>
__device__ __forceinline__ acc_t warp_max(acc_t x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x = max(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

struct Shape {
  int groups, channels, height, width, k;
};

// Softmax of the taps of pixel (bg, i, j0 + p) for every p < tile handled by this warp, into weights[p*K*K + t].
template <typename scalar_t, typename acc_t>
__device__ void tile_softmax(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ rpb, acc_t* weights,
                             int64_t bg, int i, int j0, int tile, const Shape s) {
  const int k = s.k, kk = k * k, span = 2 * k - 1;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  const int si = contmix::window_start(i, s.height, k);
  const scalar_t* table = rpb + int64_t(bg % s.groups) * span * span;
  for (int p = warp; p < tile; p += warps) {
    const int j = j0 + p;
    if (j >= s.width) break;  // uniform within the warp
    const int sj = contmix::window_start(j, s.width, k);
    const scalar_t* pixel_logits = logits + ((bg * s.height + i) * s.width + j) * kk;
    acc_t* w = weights + p * kk;
    acc_t local_max = -INFINITY;
    for (int t = lane; t < kk; t += kWarp) {
      const int a = t / k, b = t % k;
      const acc_t x = static_cast<acc_t>(pixel_logits[t]) +
                      static_cast<acc_t>(table[contmix::bias_offset(i, si + a, k) * span +
                                               contmix::bias_offset(j, sj + b, k)]);
      w[t] = x;
      local_max = max(local_max, x);
    }
    const acc_t row_max = warp_max(local_max);
    acc_t local_sum = 0;
    for (int t = lane; t < kk; t += kWarp) {
      const acc_t e = exp_acc(w[t] - row_max);
      w[t] = e;
      local_sum += e;
    }
    const acc_t inverse = acc_t(1) / warp_sum(local_sum);
    for (int t = lane; t < kk; t += kWarp) w[t] *= inverse;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ rpb,
                   const scalar_t* __restrict__ value, scalar_t* __restrict__ out, int tile, const Shape s) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* weights = reinterpret_cast<acc_t*>(shared_bytes);
  const int tiles = (s.width + tile - 1) / tile;
  const int64_t bg = blockIdx.x / tiles;
  const int i = blockIdx.y, j0 = int(blockIdx.x % tiles) * tile, k = s.k;
  tile_softmax(logits, rpb, weights, bg, i, j0, tile, s);
  __syncthreads();

  const int p = threadIdx.x % tile, channel_lanes = blockDim.x / tile, c0 = threadIdx.x / tile;
  const int j = j0 + p;
  if (c0 >= channel_lanes || j >= s.width) return;
  const int si = contmix::window_start(i, s.height, k), sj = contmix::window_start(j, s.width, k);
  const int64_t hw = int64_t(s.height) * s.width;
  const acc_t* w = weights + p * k * k;
  for (int c = c0; c < s.channels; c += channel_lanes) {
    const scalar_t* plane = value + (bg * s.channels + c) * hw;
    acc_t acc = 0;
    for (int a = 0; a < k; ++a) {
      const scalar_t* window_row = plane + int64_t(si + a) * s.width + sj;
      for (int b = 0; b < k; ++b) acc += w[a * k + b] * static_cast<acc_t>(window_row[b]);
    }
    out[(bg * s.channels + c) * hw + int64_t(i) * s.width + j] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    grad_logits_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ logits,
                       const scalar_t* __restrict__ rpb, const scalar_t* __restrict__ value,
                       scalar_t* __restrict__ grad_logits, acc_t* __restrict__ attn_out, acc_t* __restrict__ glog_out,
                       int tile, const Shape s) {
  extern __shared__ unsigned char shared_bytes[];
  const int k = s.k, kk = k * k;
  acc_t* weights = reinterpret_cast<acc_t*>(shared_bytes);
  acc_t* grad_attn = weights + tile * kk;
  const int tiles = (s.width + tile - 1) / tile;
  const int64_t bg = blockIdx.x / tiles;
  const int i = blockIdx.y, j0 = int(blockIdx.x % tiles) * tile;
  const int64_t hw = int64_t(s.height) * s.width;
  tile_softmax(logits, rpb, weights, bg, i, j0, tile, s);

  // dL/dattn: one (pixel, tap) pair per thread, neighbouring threads on neighbouring columns.
  const int si = contmix::window_start(i, s.height, k);
  for (int idx = threadIdx.x; idx < tile * kk; idx += blockDim.x) {
    const int p = idx % tile, t = idx / tile, j = j0 + p;
    if (j >= s.width) continue;
    const int sj = contmix::window_start(j, s.width, k);
    const int64_t query = int64_t(i) * s.width + j;
    const int64_t key = int64_t(si + t / k) * s.width + sj + t % k;
    acc_t dot = 0;
    for (int c = 0; c < s.channels; ++c) {
      const int64_t plane = (bg * s.channels + c) * hw;
      dot += static_cast<acc_t>(grad_out[plane + query]) * static_cast<acc_t>(value[plane + key]);
    }
    grad_attn[p * kk + t] = dot;
  }
  __syncthreads();

  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int p = warp; p < tile; p += warps) {
    const int j = j0 + p;
    if (j >= s.width) break;
    const acc_t* w = weights + p * kk;
    const acc_t* ga = grad_attn + p * kk;
    acc_t local = 0;
    for (int t = lane; t < kk; t += kWarp) local += w[t] * ga[t];
    const acc_t weighted = warp_sum(local);
    const int64_t base = ((bg * s.height + i) * s.width + j) * kk;
    for (int t = lane; t < kk; t += kWarp) {
      const acc_t g = w[t] * (ga[t] - weighted);
      grad_logits[base + t] = static_cast<scalar_t>(g);
      glog_out[base + t] = g;
      attn_out[base + t] = w[t];
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    grad_rpb_kernel(const acc_t* __restrict__ glog, scalar_t* __restrict__ grad_rpb, int64_t batch, const Shape s) {
  __shared__ acc_t partial[kThreads];
  const int k = s.k, kk = k * k, span = 2 * k - 1;
  const int entry = blockIdx.x;
  const int g = entry / (span * span), dy = entry / span % span, dx = entry % span;
  const int64_t pixels = int64_t(s.height) * s.width;
  int i_lo, i_hi, j_lo, j_hi;
  contmix::offset_queries(dy, s.height, k, &i_lo, &i_hi);
  contmix::offset_queries(dx, s.width, k, &j_lo, &j_hi);
  const int rows = i_hi - i_lo + 1, cols = j_hi - j_lo + 1;
  acc_t total = 0;
  if (rows > 0 && cols > 0) {
    const int64_t per_image = int64_t(rows) * cols;
    for (int64_t n = threadIdx.x; n < batch * per_image; n += blockDim.x) {
      const int64_t b = n / per_image;
      const int i = i_lo + int(n % per_image / cols), j = j_lo + int(n % cols);
      const int a = contmix::tap_for_offset(i, dy, s.height, k);
      const int bb = contmix::tap_for_offset(j, dx, s.width, k);
      total += glog[((b * s.groups + g) * pixels + int64_t(i) * s.width + j) * kk + a * k + bb];
    }
  }
  partial[threadIdx.x] = total;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_rpb[entry] = static_cast<scalar_t>(partial[0]);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    grad_value_kernel(const scalar_t* __restrict__ grad_out, const acc_t* __restrict__ attn,
                      scalar_t* __restrict__ grad_value, int64_t total, const Shape s) {
  // one thread per (bg, channel chunk, key row p, key column q); neighbouring threads on neighbouring q
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= total) return;
  const int k = s.k, kk = k * k;
  const int chunks = (s.channels + kChannelChunk - 1) / kChannelChunk;
  const int64_t hw = int64_t(s.height) * s.width;
  const int q = int(n % s.width), p = int(n / s.width % s.height);
  const int64_t bg = n / hw / chunks;
  const int c0 = int(n / hw % chunks) * kChannelChunk;
  const int count = s.channels - c0 < kChannelChunk ? s.channels - c0 : kChannelChunk;
  const scalar_t* g = grad_out + (bg * s.channels + c0) * hw;
  const acc_t* plane_attn = attn + bg * hw * kk;
  const int i_last = contmix::inverse_last(p, s.height, k), j_first = contmix::inverse_first(q, s.width, k),
            j_last = contmix::inverse_last(q, s.width, k);
  acc_t acc[kChannelChunk];
#pragma unroll
  for (int c = 0; c < kChannelChunk; ++c) acc[c] = 0;
  for (int i = contmix::inverse_first(p, s.height, k); i <= i_last; ++i) {
    const int a = p - contmix::window_start(i, s.height, k);
    for (int j = j_first; j <= j_last; ++j) {
      const int b = q - contmix::window_start(j, s.width, k);
      const int64_t query = int64_t(i) * s.width + j;
      const acc_t weight = plane_attn[query * kk + a * k + b];
#pragma unroll
      for (int c = 0; c < kChannelChunk; ++c) {
        if (c < count) acc[c] += weight * static_cast<acc_t>(g[c * hw + query]);
      }
    }
  }
  scalar_t* out = grad_value + (bg * s.channels + c0) * hw + int64_t(p) * s.width + q;
  for (int c = 0; c < count; ++c) out[c * hw] = static_cast<scalar_t>(acc[c]);
}

Shape shape_of(const at::Tensor& value, int64_t k) {
  return Shape{int(value.size(1)), int(value.size(2)), int(value.size(3)), int(value.size(4)), int(k)};
}

// Largest kernel size whose backward (two tile x K*K float buffers) fits one pixel in shared memory; the
// forward accepts the same bound so that a training step never fails only in backward.
int max_kernel_size(size_t acc_bytes) {
  int k = 3;
  while (size_t(2) * (k + 2) * (k + 2) * acc_bytes <= kSharedBytes) k += 2;
  return k;
}

// Columns per block so that `buffers` tile x K*K accumulators fit in the default shared memory.
int pick_tile(int width, int k, int buffers, size_t acc_bytes) {
  TORCH_CHECK(k <= max_kernel_size(acc_bytes), "ContMix CUDA kernel supports kernel_size up to ",
              max_kernel_size(acc_bytes), " for this dtype (forward and backward), got ", k);
  const size_t per_pixel = size_t(buffers) * k * k * acc_bytes;
  int tile = int(kSharedBytes / per_pixel);
  tile = tile < kMaxTile ? tile : kMaxTile;
  return tile < width ? tile : width;
}

// Grid (x = batch*group*column tiles, y = rows) within CUDA's limits: 2^31 - 1 and 65535.
dim3 grid_of(const at::Tensor& value, int tile) {
  const int64_t tiles = (value.size(4) + tile - 1) / tile;
  const int64_t blocks = value.size(0) * value.size(1) * tiles;
  TORCH_CHECK(blocks <= int64_t(0x7fffffff) && value.size(3) <= 65535,
              "ContMix CUDA kernel needs B*G*ceil(W/tile) < 2^31 and H <= 65535, got value ", value.sizes());
  return dim3(unsigned(blocks), unsigned(value.size(3)), 1);
}

}  // namespace

at::Tensor contmix_forward_cuda(const at::Tensor& logits, const at::Tensor& rpb, const at::Tensor& value,
                                int64_t kernel_size) {
  contmix::check_inputs(logits, rpb, value, kernel_size, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(value.device());
  const at::Tensor logits_c = logits.contiguous(), rpb_c = rpb.contiguous(), value_c = value.contiguous();
  at::Tensor out = at::empty(value.sizes(), value.options());
  if (out.numel() == 0) return out;
  const Shape s = shape_of(value, kernel_size);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "contmix_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int tile = pick_tile(s.width, s.k, 1, sizeof(acc_t));
    const dim3 grid = grid_of(value, tile);
    const size_t shared = size_t(tile) * s.k * s.k * sizeof(acc_t);
    forward_kernel<scalar_t, acc_t><<<grid, kThreads, shared, stream>>>(
        logits_c.const_data_ptr<scalar_t>(), rpb_c.const_data_ptr<scalar_t>(), value_c.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), tile, s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contmix_backward_cuda(const at::Tensor& grad_out,
                                                                     const at::Tensor& logits, const at::Tensor& rpb,
                                                                     const at::Tensor& value, int64_t kernel_size) {
  contmix::check_inputs(logits, rpb, value, kernel_size, c10::DeviceType::CUDA);
  TORCH_CHECK(grad_out.sizes() == value.sizes() && grad_out.scalar_type() == value.scalar_type() &&
                  grad_out.device() == value.device(),
              "ContMix grad_out must match value (", value.sizes(), ", ", value.scalar_type(), "), got ",
              grad_out.sizes(), ", ", grad_out.scalar_type());
  const c10::cuda::CUDAGuard guard(value.device());
  const at::Tensor grad_c = grad_out.contiguous(), logits_c = logits.contiguous(), rpb_c = rpb.contiguous(),
                   value_c = value.contiguous();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  at::Tensor grad_rpb = at::empty(rpb.sizes(), rpb.options());
  at::Tensor grad_value = at::empty(value.sizes(), value.options());
  // C == 0 (or B == 0): the output does not depend on the logits, whose gradient is then zero, not garbage
  if (value.numel() == 0) return {grad_logits.zero_(), grad_rpb.zero_(), grad_value};
  const Shape s = shape_of(value, kernel_size);
  const int span = 2 * s.k - 1;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "contmix_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_options = logits.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    at::Tensor attn = at::empty(logits.sizes(), acc_options);
    at::Tensor glog = at::empty(logits.sizes(), acc_options);
    const int tile = pick_tile(s.width, s.k, 2, sizeof(acc_t));
    const dim3 grid = grid_of(value, tile);
    const size_t shared = 2 * size_t(tile) * s.k * s.k * sizeof(acc_t);
    grad_logits_kernel<scalar_t, acc_t><<<grid, kThreads, shared, stream>>>(
        grad_c.const_data_ptr<scalar_t>(), logits_c.const_data_ptr<scalar_t>(), rpb_c.const_data_ptr<scalar_t>(),
        value_c.const_data_ptr<scalar_t>(), grad_logits.mutable_data_ptr<scalar_t>(),
        attn.mutable_data_ptr<acc_t>(), glog.mutable_data_ptr<acc_t>(), tile, s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_rpb_kernel<scalar_t, acc_t><<<s.groups * span * span, kThreads, 0, stream>>>(
        glog.const_data_ptr<acc_t>(), grad_rpb.mutable_data_ptr<scalar_t>(), value.size(0), s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t total =
        value.size(0) * value.size(1) * ((s.channels + kChannelChunk - 1) / kChannelChunk) * value.size(3) * value.size(4);
    grad_value_kernel<scalar_t, acc_t><<<(total + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        grad_c.const_data_ptr<scalar_t>(), attn.const_data_ptr<acc_t>(), grad_value.mutable_data_ptr<scalar_t>(),
        total, s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_logits, grad_rpb, grad_value};
}
