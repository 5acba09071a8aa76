"""Export of the IMPACT components: ONNX graphs (+ TensorRT engines) in a verified engine bundle.

    python -m export.build_engines --model DIR|random:<preset> [--out DIR] ...

descriptors  what each graph takes and gives, dynamic axes, min/opt/max profiles
onnx_export  the wrappers, torch.onnx.export, graph checks, comparison with PyTorch
manifest     the engine bundle's manifest, hashing, verification, cache folders
trt_build    TensorRT engines from the graphs (TensorRT 10 API; unverified, see docs/export.md)
"""
