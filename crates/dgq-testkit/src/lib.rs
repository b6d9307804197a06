//! Test tools shared by the dgq crates (dev-only, never published):
//!
//! - [`SplitMix64`], the reproducible test RNG, and [`TestRng`], the integer draws the weight
//!   generators need from it or from a `rand` generator;
//! - random valid weights and activations: [`random_dgq`], [`dgq_weight`], [`sym_weight`],
//!   [`random_acts`];
//! - with feature `capi`: `capi::ok`, `capi::fails` and `capi::last_error` for C-ABI tests;
//! - [`Device`] and [`test_device!`], which runs one test body on every backend: the CPU
//!   reference always, the GPU (feature `gpu`) when dgq-cuda was built with its kernels and a
//!   device opens. A GPU test without a usable GPU prints why and passes, unless
//!   `DGQ_REQUIRE_GPU=1`: then it fails (`gpu()`, [`no_gpu`]).
//!
//! The generators are fixed algorithms: a seed gives the same values on every platform and in
//! every version, so a test's inputs never change under it.

mod device;
mod rng;
mod weights;

#[cfg(feature = "capi")]
pub mod capi;

pub use device::*;
pub use rng::{SplitMix64, TestRng};
pub use weights::{dgq_weight, random_acts, random_dgq, s2_tiered, sym_weight};
