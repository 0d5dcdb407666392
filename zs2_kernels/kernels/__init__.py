"""Triton kernels of the zs2 ops. Importing this package imports triton; the rest of the library imports it lazily."""
