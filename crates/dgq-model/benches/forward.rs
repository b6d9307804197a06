//! CPU throughput of the reference decoder's building blocks at SmolLM2-135M shapes
//! (d = 576, ff = 1536, 9/3 heads of 64), random weights.
//!
//! - `linear`: `FloatLinear::forward` (the `gemm` crate) against ndarray's `dot`
//!   (matrixmultiply) as the baseline, for decode (M = 1), small and prefill batches.
//! - `decoder_layer`: one LLaMA layer (norms, attention, SwiGLU) on a 512-token window.
//!
//! After the criterion groups, a short same-run comparison prints gemm/ndarray time ratios.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use dgq_model::{
    AttentionSpec, DecoderLayer, Family, FloatLinear, Linear, LinearOp, Mlp, Norm, NormKind, Rope,
};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D: usize = 576;
const FF: usize = 1536;

fn rand_mat(r: &mut ChaCha8Rng, n: usize, k: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, k), |_| r.random_range(-0.05..0.05))
}

fn lin(r: &mut ChaCha8Rng, n: usize, k: usize) -> Linear {
    Linear::float(rand_mat(r, n, k), None).unwrap()
}

fn smollm_layer(r: &mut ChaCha8Rng) -> DecoderLayer {
    let norm = |r: &mut ChaCha8Rng| {
        let w = Array1::from_shape_fn(D, |_| 1.0 + r.random_range(-0.1..0.1));
        Norm::new(NormKind::Rms, w, None, 1e-5).unwrap()
    };
    DecoderLayer {
        index: 0,
        family: Family::Llama,
        norm_before: true,
        attn: AttentionSpec {
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            rope: Some(Rope::new(64, 100000.0, None).unwrap()),
        },
        attn_norm: norm(r),
        mlp_norm: norm(r),
        q_proj: lin(r, D, D),
        k_proj: lin(r, 192, D),
        v_proj: lin(r, 192, D),
        o_proj: lin(r, D, D),
        mlp: Mlp::SwiGlu {
            gate: lin(r, FF, D),
            up: lin(r, FF, D),
            down: lin(r, D, FF),
        },
    }
}

fn bench_linear(c: &mut Criterion) {
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let w = FloatLinear::new(rand_mat(&mut r, FF, D), None).unwrap();
    let mut g = c.benchmark_group("linear_1536x576");
    for m in [1usize, 16, 512] {
        let x = rand_mat(&mut r, m, D);
        g.throughput(Throughput::Elements((2 * m * FF * D) as u64));
        g.bench_function(format!("gemm/m{m}"), |b| {
            b.iter(|| w.forward(black_box(x.view())).unwrap())
        });
        g.bench_function(format!("ndarray_dot/m{m}"), |b| {
            b.iter(|| black_box(x.view()).dot(&w.weight.t()))
        });
    }
    g.finish();
}

fn bench_layer(c: &mut Criterion) {
    let mut r = ChaCha8Rng::seed_from_u64(2);
    let layer = smollm_layer(&mut r);
    let h = rand_mat(&mut r, 512, D);
    let mut g = c.benchmark_group("decoder_layer_smollm2");
    g.sample_size(10);
    g.throughput(Throughput::Elements(512));
    g.bench_function("t512", |b| {
        b.iter(|| layer.forward(black_box(h.view()), 0).unwrap())
    });
    g.finish();
}

/// Same-run ratios: median of a few timed repetitions each.
fn ratios() {
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let w = FloatLinear::new(rand_mat(&mut r, FF, D), None).unwrap();
    let median = |f: &mut dyn FnMut()| {
        let mut t: Vec<f64> = (0..15)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    println!("\nlinear 1536x576, gemm vs ndarray dot (same run, median of 15):");
    for m in [1usize, 16, 512] {
        let x = rand_mat(&mut r, m, D);
        let a = median(&mut || {
            black_box(w.forward(x.view()).unwrap());
        });
        let b = median(&mut || {
            black_box(x.dot(&w.weight.t()));
        });
        println!(
            "  m={m:4}: gemm {:9.1} µs  ndarray {:9.1} µs  speedup ×{:.2}  ({:.1} GFLOP/s)",
            a * 1e6,
            b * 1e6,
            b / a,
            2.0 * (m * FF * D) as f64 / a / 1e9
        );
    }
}

criterion_group!(benches, bench_linear, bench_layer);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
