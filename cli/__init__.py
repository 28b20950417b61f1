"""The `pathonnx` command line: a thin click layer over the pathonnx API."""
