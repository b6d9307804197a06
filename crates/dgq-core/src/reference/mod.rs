//! CPU reference kernels: the truth every other kernel is tested against.
