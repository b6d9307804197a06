//! CPU reference kernels vs the f32 GEMM baseline, same shapes, same run.
//!
//! W4A8 GEMV (M = 1) and GEMM (M = 64) at N = K = 4096, g = 128: `reference::w4a8_gemm`
//! (INT8 activations already quantized; DGQ weight unpacked on the fly, exact INT32 accumulation,
//! f32 epilogue) against `reference::matmul_f32_nt` on the dequantized f32 weight. Criterion reports
//! each with its throughput (elements = 2·M·N·K operations, so `Gelem/s` reads as GOPS); a summary
//! then times both kernels interleaved (median of repeated runs, fairer on a shared machine) and
//! prints µs, GOPS and the ratio.
//!
//! `cargo bench -p dgq-core --bench reference -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use dgq_core::act::{quantize_per_token, QuantizedActs};
use dgq_core::reference::{matmul_f32_nt, w4a8_gemm};
use dgq_core::DualGrainedWeight;
use dgq_testkit::TestRng;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const N: usize = 4096;
const K: usize = 4096;
const G: usize = 128;
const MS: [usize; 2] = [1, 64];

/// A random valid DGQ weight: S2 in 1..=40, S1 in [1e-4, 1e-3).
fn random_dgq(n: usize, k: usize, g: usize, seed: u64) -> DualGrainedWeight {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    dgq_testkit::dgq_weight(
        &mut rng,
        n,
        k,
        g,
        |r| r.int_in(1, 40) as i8,
        |r| r.random_range(1e-4f32..1e-3),
    )
}

struct Case {
    m: usize,
    x: Array2<f32>,
    xq: QuantizedActs,
}

fn cases() -> Vec<Case> {
    MS.iter()
        .map(|&m| {
            let mut rng = ChaCha8Rng::seed_from_u64(m as u64);
            let d = Normal::new(0.0f32, 1.0).expect("valid normal");
            let x = Array2::from_shape_fn((m, K), |_| d.sample(&mut rng));
            let xq = quantize_per_token(x.view()).expect("finite activations");
            Case { m, x, xq }
        })
        .collect()
}

fn ops(m: usize) -> u64 {
    2 * (m * N * K) as u64
}

fn bench(c: &mut Criterion, w: &DualGrainedWeight, wf: &Array2<f32>, cases: &[Case]) {
    for case in cases {
        let mut group = c.benchmark_group(format!("w4a8_{N}x{K}_g{G}"));
        group.throughput(Throughput::Elements(ops(case.m)));
        group.bench_with_input(
            BenchmarkId::new("reference_w4a8_gemm", case.m),
            case,
            |b, case| {
                b.iter(|| w4a8_gemm(black_box(&case.xq), black_box(w), None).expect("shapes agree"))
            },
        );
        group.bench_with_input(
            BenchmarkId::new("baseline_f32_matmul", case.m),
            case,
            |b, case| {
                b.iter(|| {
                    matmul_f32_nt(black_box(case.x.view()), black_box(wf.view()))
                        .expect("shapes agree")
                })
            },
        );
        group.finish();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved timing of both kernels, so that load from other processes hits both alike.
fn summary(w: &DualGrainedWeight, wf: &Array2<f32>, cases: &[Case]) {
    println!(
        "\nsummary (median of interleaved runs, {} rayon threads)",
        rayon::current_num_threads()
    );
    println!(
        "{:>4} {:>14} {:>10} {:>14} {:>10} {:>12}",
        "M", "w4a8 µs", "GOPS", "f32 µs", "GOPS", "f32/w4a8"
    );
    for case in cases {
        let reps = if case.m == 1 { 60 } else { 15 };
        let (mut tq, mut tf) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            black_box(w4a8_gemm(&case.xq, w, None).expect("shapes agree"));
            tq.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            black_box(matmul_f32_nt(case.x.view(), wf.view()).expect("shapes agree"));
            tf.push(t.elapsed().as_secs_f64());
        }
        let (q, f) = (median(tq), median(tf));
        let gops = |t: f64| ops(case.m) as f64 / t / 1e9;
        println!(
            "{:>4} {:>14.1} {:>10.1} {:>14.1} {:>10.1} {:>11.2}x",
            case.m,
            q * 1e6,
            gops(q),
            f * 1e6,
            gops(f),
            f / q
        );
    }
}

fn main() {
    let w = random_dgq(N, K, G, 1);
    let wf = w.dequantize();
    let cases = cases();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &w, &wf, &cases);
    c.final_summary();
    // Only when benchmarking for real (not `cargo test --benches`, which runs each bench once).
    if std::env::args().any(|a| a == "--bench") {
        summary(&w, &wf, &cases);
    }
}
