// Entry points of the fused ContMix op (layouts in common/contmix_common.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

// out (B, G, C, H, W) = sum over the clamped K x K window of softmax(logits + bias) * value.
at::Tensor contmix_forward_cpu(const at::Tensor& logits, const at::Tensor& rpb, const at::Tensor& value,
                               int64_t kernel_size);
// (grad_logits, grad_rpb, grad_value) for grad_out (B, G, C, H, W).
std::tuple<at::Tensor, at::Tensor, at::Tensor> contmix_backward_cpu(const at::Tensor& grad_out,
                                                                    const at::Tensor& logits, const at::Tensor& rpb,
                                                                    const at::Tensor& value, int64_t kernel_size);

#if defined(CUDA_KERNEL)
at::Tensor contmix_forward_cuda(const at::Tensor& logits, const at::Tensor& rpb, const at::Tensor& value,
                                int64_t kernel_size);
std::tuple<at::Tensor, at::Tensor, at::Tensor> contmix_backward_cuda(const at::Tensor& grad_out,
                                                                     const at::Tensor& logits, const at::Tensor& rpb,
                                                                     const at::Tensor& value, int64_t kernel_size);
#endif
