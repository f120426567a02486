"""fqtool: quantization-error analysis for low-precision formats. The format kernels live in ``kernels``."""

__version__ = "0.1.0"
