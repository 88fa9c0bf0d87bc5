"""Peers: vtool's INT8 PTQ against ONNX Runtime's quantizer and NNCF on real models, in one table per model.

Each model (EfficientNet-Lite0 with ImageNet weights, resnet18, a vit-tiny trained on digits) is
quantized by every tool from the same fp32 ONNX and the same calibration batches, judged on the same
held-out images (top-1 agreement with fp32 and its Wilson 95% interval, logit SQNR, top-1 where
labels exist, layers left in float) and timed in ONE interleaved run per batch size in ONNX Runtime
and OpenVINO. Entry points: `python -m benchmarks.peers` (table + JSON) and
`pytest --benchmark-only -k peers` (benchmarks/test_peers.py). NNCF is optional: `vtool[peers]`.
"""
