"""ONNX Runtime training backend: differentiable rewrites, artifacts, and a training session.

Nothing heavy is imported here; onnxruntime.training is loaded on first use
(see `ort_api.import_training_modules`).
"""
