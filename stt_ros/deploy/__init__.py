"""Deployment: the foveated model exported as one ONNX graph (`export`) and run by ONNX Runtime without torch
(`runtime`)."""
