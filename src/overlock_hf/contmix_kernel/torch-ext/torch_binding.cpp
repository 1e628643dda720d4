// Op schema and backend registrations of the fused ContMix kernel.
//
//   contmix_forward(logits (B,G,H,W,K*K), rpb (G,2K-1,2K-1), value (B,G,C,H,W), K) -> out (B,G,C,H,W)
//   contmix_backward(grad_out, logits, rpb, value, K) -> (grad_logits, grad_rpb, grad_value)
//
// The CPU implementation is registered in every build; the CUDA one when compiled with CUDA_KERNEL.

#include <torch/library.h>

#include "registration.h"
#include "torch_binding.h"

TORCH_LIBRARY_EXPAND(TORCH_EXTENSION_NAME, ops) {
  ops.def("contmix_forward(Tensor logits, Tensor rpb, Tensor value, int kernel_size) -> Tensor");
  ops.def(
      "contmix_backward(Tensor grad_out, Tensor logits, Tensor rpb, Tensor value, int kernel_size) "
      "-> (Tensor, Tensor, Tensor)");
  ops.impl("contmix_forward", c10::DeviceType::CPU, &contmix_forward_cpu);
  ops.impl("contmix_backward", c10::DeviceType::CPU, &contmix_backward_cpu);
#if defined(CUDA_KERNEL)
  ops.impl("contmix_forward", c10::DeviceType::CUDA, &contmix_forward_cuda);
  ops.impl("contmix_backward", c10::DeviceType::CUDA, &contmix_backward_cuda);
#endif
}

REGISTER_EXTENSION(TORCH_EXTENSION_NAME)
