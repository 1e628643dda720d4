// Window and bias index arithmetic of ContMix, shared by the CPU and CUDA backends.
//
// Conventions (one spatial axis; rows and columns are handled the same way):
//   * `length` is H (or W), `k` the odd kernel size, `r = k / 2`.
//   * The window of query position `i` starts at `window_start(i) = clamp(i - r, 0, length - k)` and covers
//     keys `window_start(i) .. window_start(i) + k - 1`: near a border the window shifts inward (NATTEN
//     na2d semantics with dilation 1), so `length >= k` is required.
//   * The relative-position-bias table has `2k - 1` entries per axis and is indexed by key minus query
//     position, offset by `k - 1`: `bias_offset(query, key) = key - query + k - 1`.
//   * Tap `t = a * k + b` is row `a`, column `b` of the window.
//
// Tensor layouts used by both backends (all contiguous):
//   logits (B, G, H, W, k*k), rpb (G, 2k-1, 2k-1), value and output (B, G, C, H, W) ("grouped NCHW": a
//   (B, G*C, H, W) feature map viewed without a copy).
#pragma once

#if defined(__CUDACC__)
#define CONTMIX_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CONTMIX_HOST_DEVICE inline
#endif

namespace contmix {

// First key position of the window of query `i`: clamp(i - k/2, 0, length - k).
CONTMIX_HOST_DEVICE int window_start(int i, int length, int k) {
  int start = i - k / 2;
  if (start < 0) start = 0;
  if (start > length - k) start = length - k;
  return start;
}

// Index into one axis of the (2k-1)-wide bias table for a query and a key inside its window.
CONTMIX_HOST_DEVICE int bias_offset(int query, int key, int k) { return key - query + k - 1; }

// The queries whose window contains key `p` form the contiguous range [first, last] ("inverse
// neighborhood"). window_start is non-decreasing, so the range is bounded by the first query whose window
// starts at or after p - k + 1 and the last one whose window starts at or before p.
CONTMIX_HOST_DEVICE int inverse_first(int p, int length, int k) { return p >= k ? p - k / 2 : 0; }
CONTMIX_HOST_DEVICE int inverse_last(int p, int length, int k) { return p < length - k ? p + k / 2 : length - 1; }

// For a bias-table offset `d` (0 .. 2k-2) along one axis, the window tap of query `i` that reads it, or -1
// when the key i + d - (k-1) is outside that query's window.
CONTMIX_HOST_DEVICE int tap_for_offset(int i, int d, int length, int k) {
  const int tap = i + d - (k - 1) - window_start(i, length, k);
  return (tap >= 0 && tap < k) ? tap : -1;
}

// The queries i whose window tap reads bias-table offset `d` along one axis: i - window_start(i) is
// non-decreasing in i, so tap_for_offset(i, d) is too and these queries form one range [*lo, *hi]
// (empty when *lo > *hi). Found by two binary searches.
CONTMIX_HOST_DEVICE void offset_queries(int d, int length, int k, int* lo, int* hi) {
  // tap(i) = i - window_start(i) + d - (k - 1); first i with tap >= 0, last i with tap <= k - 1
  int left = 0, right = length;
  while (left < right) {
    const int mid = (left + right) / 2;
    if (mid - window_start(mid, length, k) + d - (k - 1) >= 0) right = mid; else left = mid + 1;
  }
  *lo = left;
  left = 0, right = length;
  while (left < right) {
    const int mid = (left + right) / 2;
    if (mid - window_start(mid, length, k) + d - (k - 1) > k - 1) right = mid; else left = mid + 1;
  }
  *hi = left - 1;
}

}  // namespace contmix
