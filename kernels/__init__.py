"""GPU kernels of impact-rt (Liger-Kernel layout: kernel + launcher, parity test, benchmark).

* ``kernels.fused_sampler`` — the fused T̂-step DDPM sampler of the diffusion head (Triton).
* ``kernels.custom_op``     — ``torch.ops.impact_rt.fused_sample`` (torch.library custom op).
* ``kernels.philox``        — NumPy reference of the kernel's in-kernel noise stream.
* ``kernels.bench_fused_sampler`` — benchmark (GPU only).

Importing this package imports neither Triton nor CUDA; the submodules do. To run the Triton
kernels on CPU (tests), set TRITON_INTERPRET=1 before Triton is first imported in the process.
"""
