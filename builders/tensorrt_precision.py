"""Mixed precision that keeps a BERT-family encoder's FP16 TensorRT engine within parity.

In FP16, LayerNorm's mean/variance and Softmax's exponentials over long rows overflow or lose the digits an
embedding needs (sentence embeddings are compared at cosine 0.9999). Exported at opset >= 17, LayerNorm arrives as
ONNX ``LayerNormalization`` (TensorRT's ``INormalizationLayer``) and attention as ``Softmax``; this pins those layers
(and their outputs) to FP32 and sets ``OBEY_PRECISION_CONSTRAINTS`` so TensorRT may not override the choice, while
the MatMuls, which carry the speed-up, stay in FP16. API: TensorRT 10.x Python (``ILayer.precision``,
``ILayer.set_output_type``, ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``).
"""
from __future__ import annotations


def keep_sensitive_layers_fp32(trt, network, config) -> list[str]:
    """Pin every Softmax and normalization layer of ``network`` to FP32; returns their names (empty: nothing set)."""
    kinds = {trt.LayerType.SOFTMAX, trt.LayerType.NORMALIZATION}
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type not in kinds:
            continue
        layer.precision = trt.float32
        for output in range(layer.num_outputs):
            layer.set_output_type(output, trt.float32)
        pinned.append(layer.name)
    if pinned:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return pinned
