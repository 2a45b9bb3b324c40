"""Models: generated families' builders, loading files and factories, export to ONNX and
TorchScript, precision conversions, the numerical check and the content-hash artifact cache."""
