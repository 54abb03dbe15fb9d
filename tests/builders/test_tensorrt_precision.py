"""The FP16 engine keeps Softmax and LayerNorm in FP32 (builders/tensorrt_precision.py), checked on a network object
that records what the builder is told; TensorRT itself cannot run here (the real build is a ``tensorrt`` test)."""
from __future__ import annotations

from types import SimpleNamespace

from builders.tensorrt_precision import keep_sensitive_layers_fp32


class _Layer:
    def __init__(self, name, kind, outputs=1):
        self.name, self.type, self.num_outputs = name, kind, outputs
        self.precision = "unset"
        self.output_types = {}

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


def _trt():
    kinds = SimpleNamespace(SOFTMAX="softmax", NORMALIZATION="normalization", MATRIX_MULTIPLY="matmul")
    return SimpleNamespace(LayerType=kinds, float32="fp32",
                           BuilderFlag=SimpleNamespace(OBEY_PRECISION_CONSTRAINTS="obey"))


def test_softmax_and_layernorm_are_pinned_to_fp32_and_the_builder_must_obey():
    trt = _trt()
    layers = [_Layer("attn.matmul", "matmul"), _Layer("attn.softmax", "softmax"), _Layer("ln", "normalization")]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    flags = []
    config = SimpleNamespace(set_flag=flags.append)
    assert keep_sensitive_layers_fp32(trt, network, config) == ["attn.softmax", "ln"]
    assert layers[0].precision == "unset" and layers[0].output_types == {}  # MatMuls stay FP16
    assert layers[1].precision == layers[2].precision == "fp32" and layers[2].output_types == {0: "fp32"}
    assert flags == ["obey"]


def test_a_network_without_such_layers_gets_no_constraint():
    trt = _trt()
    layers = [_Layer("conv", "matmul")]
    flags = []
    assert keep_sensitive_layers_fp32(trt, SimpleNamespace(num_layers=1, get_layer=lambda i: layers[i]),
                                      SimpleNamespace(set_flag=flags.append)) == []
    assert flags == []
