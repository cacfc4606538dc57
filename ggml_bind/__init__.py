"""ggml_bind: a cffi (ABI mode) binding to the ggml library built by llama-cpp-python.

Importing this package loads no C code; the library is loaded on first use.
"""
__version__ = "0.1.0"
