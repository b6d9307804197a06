//! Round-to-nearest quantization primitives.
