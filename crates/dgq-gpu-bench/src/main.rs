//! GPU benchmark: in one run, on the same shapes, times
//! - our W4A8 GEMM (int8 activations in, f16 out) and the same with dynamic activation
//!   quantization from f16 in front,
//! - cuBLAS FP16 (`cublasGemmEx`, f16 in/out, f32 compute),
//! - cuBLASLt INT8 → INT32 (`CUBLAS_COMPUTE_32I`, TN),
//!
//! with CUDA events over many launches, every weight operand rotated through more than
//! `--rotate-mb` MB of copies so that decode shapes read HBM rather than L2, and a measured
//! device-to-device copy bandwidth. Prints a markdown table and writes `gpu-bench.md` and
//! `gpu-bench.json` to `--out-dir`.

use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::Arc;

use clap::Parser;
use dgq_cuda::cudarc::cublas::{sys as bsys, CudaBlas, Gemm, GemmConfig as BlasConfig};
use dgq_cuda::cudarc::cublaslt::{result as lt, sys as ltsys};
use dgq_cuda::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use dgq_cuda::*;
use dgq_testkit::SplitMix64;
use half::f16;
use rayon::prelude::*;

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
#[command(about = "Times dgq's W4A8 GEMM against cuBLAS FP16 and cuBLASLt INT8 on the same shapes")]
struct Args {
    /// N×K shapes, comma separated.
    #[arg(
        long,
        default_value = "4096x4096,11008x4096,4096x11008,8192x8192,28672x8192,8192x28672"
    )]
    shapes: String,
    /// Token counts M, comma separated.
    #[arg(long, default_value = "1,4,16,32,64,128,256,1024,4096")]
    ms: String,
    /// Group size of the DGQ weights.
    #[arg(long, default_value_t = 128)]
    group_size: usize,
    /// Each weight operand is replicated until its copies exceed this many MB.
    #[arg(long, default_value_t = 256)]
    rotate_mb: usize,
    /// Target milliseconds of GPU time per measurement.
    #[arg(long, default_value_t = 25.0)]
    target_ms: f64,
    /// Kernel choice for dgq: auto, decode, wgmma, mma (for tuning the heuristics).
    #[arg(long, default_value = "auto")]
    kernel: String,
    /// Split-K factor for dgq (0: heuristic).
    #[arg(long, default_value_t = 0)]
    split_k: u32,
    /// Launch without programmatic dependent launch.
    #[arg(long)]
    no_pdl: bool,
    /// wgmma kernel: per-thread stores instead of the TMA-store epilogue.
    #[arg(long)]
    no_tma_store: bool,
    /// At most this many K parts inside a decode CTA (1: every K part in its own CTA).
    #[arg(long, default_value_t = 8)]
    decode_max_cta_parts: u32,
    /// Force the decode plan: PARTS,SPLIT (K parts per CTA, CTAs along K).
    #[arg(long)]
    decode_plan: Option<String>,
    /// Where gpu-bench.md and gpu-bench.json go.
    #[arg(long, default_value = ".")]
    out_dir: std::path::PathBuf,
}

/// The GEMM configuration the command line asks for (every knob set explicitly).
fn gemm_config(args: &Args) -> AnyResult<GemmConfig> {
    let decode_plan = match &args.decode_plan {
        None => None,
        Some(v) => {
            let (p, s) = v
                .split_once(',')
                .ok_or_else(|| format!("--decode-plan {v:?} is not PARTS,SPLIT"))?;
            Some((p.trim().parse()?, s.trim().parse()?))
        }
    };
    Ok(GemmConfig {
        kernel: match args.kernel.as_str() {
            "auto" => KernelChoice::Auto,
            "decode" => KernelChoice::Decode,
            "wgmma" => KernelChoice::Wgmma,
            "mma" => KernelChoice::Mma,
            other => return Err(format!("unknown --kernel {other:?}").into()),
        },
        split_k: (args.split_k > 0).then_some(args.split_k),
        pdl: !args.no_pdl,
        wgmma_tma_store: !args.no_tma_store,
        decode_max_cta_parts: args.decode_max_cta_parts,
        decode_plan,
    })
}

fn parse_list(s: &str) -> AnyResult<Vec<usize>> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|e| format!("bad number {v:?}: {e}").into())
        })
        .collect()
}

fn parse_shapes(s: &str) -> AnyResult<Vec<(usize, usize)>> {
    s.split(',')
        .map(|p| {
            let (n, k) = p
                .trim()
                .split_once('x')
                .ok_or_else(|| format!("shape {p:?} is not NxK"))?;
            Ok((n.parse()?, k.parse()?))
        })
        .collect()
}

/// A random valid DGQ weight, generated fast (per-row RNG streams in parallel).
fn random_dgq(n: usize, k: usize, gs: usize, seed: u64) -> AnyResult<dgq_core::DualGrainedWeight> {
    use dgq_core::quant::dual_grained::q_bounds;
    let ng = k / gs;
    let mut rng = SplitMix64::new(seed);
    let s2 = ndarray::Array2::from_shape_fn((n, ng), |_| 1 + (rng.next_u64() % 16) as i8);
    let zeros = ndarray::Array2::from_shape_fn((n, ng), |_| (rng.next_u64() % 16) as i8);
    let mut q = ndarray::Array2::<u8>::zeros((n, k));
    q.axis_iter_mut(ndarray::Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(r, mut row)| {
            let mut rng =
                SplitMix64::new(seed ^ (r as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
            for (c, v) in row.iter_mut().enumerate() {
                let (lo, hi) = q_bounds(zeros[[r, c / gs]] as i32, s2[[r, c / gs]] as i32);
                *v = (lo + (rng.next_u64() % (hi - lo + 1) as u64) as i32) as u8;
            }
        });
    let s1 = ndarray::Array1::from_shape_fn(n, |i| f16::from_f32(1e-3 * (1.0 + (i % 7) as f32)));
    Ok(dgq_core::DualGrainedWeight::new(gs, q, zeros, s2, s1)?)
}

fn random_f16(len: usize, seed: u64) -> Vec<f16> {
    (0..len)
        .into_par_iter()
        .map(|i| {
            let mut r = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
            f16::from_f32(((r.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1)
        })
        .collect()
}

fn random_i8(len: usize, seed: u64) -> Vec<i8> {
    (0..len)
        .into_par_iter()
        .map(|i| {
            let mut r = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
            ((r.next_u64() % 255) as i32 - 127) as i8
        })
        .collect()
}

fn copies_for(bytes: usize, rotate_mb: usize) -> usize {
    (rotate_mb * 1_000_000).div_ceil(bytes.max(1)).max(2)
}

/// Median per-launch microseconds of `f(i)` (i = launch index, for rotation), timed with CUDA
/// events around batches sized to about `target_ms`.
fn time_us(
    stream: &Arc<CudaStream>,
    target_ms: f64,
    mut f: impl FnMut(usize) -> AnyResult<()>,
) -> AnyResult<f64> {
    let ctx = stream.context();
    let timing = Some(dgq_cuda::cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = ctx.new_event(timing)?;
    let stop = ctx.new_event(timing)?;
    for i in 0..3 {
        f(i)?;
    }
    start.record(stream)?;
    for i in 0..5 {
        f(i)?;
    }
    stop.record(stream)?;
    stop.synchronize()?;
    let est_ms = (start.elapsed_ms(&stop)? as f64 / 5.0).max(1e-4);
    let iters = ((target_ms / est_ms).ceil() as usize).clamp(10, 5000);
    let mut samples = Vec::new();
    for _ in 0..3 {
        start.record(stream)?;
        for i in 0..iters {
            f(i)?;
        }
        stop.record(stream)?;
        stop.synchronize()?;
        samples.push(start.elapsed_ms(&stop)? as f64 * 1000.0 / iters as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[1])
}

/// cuBLASLt INT8 TN GEMM: C_i32[N, M] (column-major) = W_s8[N, K] · X_s8[M, K]ᵀ.
struct LtInt8 {
    handle: ltsys::cublasLtHandle_t,
    desc: ltsys::cublasLtMatmulDesc_t,
    a: ltsys::cublasLtMatrixLayout_t,
    b: ltsys::cublasLtMatrixLayout_t,
    c: ltsys::cublasLtMatrixLayout_t,
    algo: ltsys::cublasLtMatmulAlgo_t,
    ws: CudaSlice<u8>,
}

impl LtInt8 {
    fn new(
        stream: &Arc<CudaStream>,
        handle: ltsys::cublasLtHandle_t,
        m: usize,
        n: usize,
        k: usize,
    ) -> AnyResult<Self> {
        let desc = lt::create_matmul_desc(
            ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32I,
            ltsys::cudaDataType_t::CUDA_R_32I,
        )?;
        let op_t = bsys::cublasOperation_t::CUBLAS_OP_T as i32;
        // SAFETY: valid descriptor and attribute buffer of the documented size.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &op_t as *const _ as *const c_void,
                std::mem::size_of_val(&op_t),
            )?;
        }
        let a = lt::create_matrix_layout(
            ltsys::cudaDataType_t::CUDA_R_8I,
            k as u64,
            n as u64,
            k as i64,
        )?;
        let b = lt::create_matrix_layout(
            ltsys::cudaDataType_t::CUDA_R_8I,
            k as u64,
            m as u64,
            k as i64,
        )?;
        let c = lt::create_matrix_layout(
            ltsys::cudaDataType_t::CUDA_R_32I,
            n as u64,
            m as u64,
            n as i64,
        )?;
        let ws_bytes: usize = 32 << 20;
        let pref = lt::create_matmul_pref()?;
        // SAFETY: as above.
        let heur = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                ltsys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws_bytes as *const _ as *const c_void,
                std::mem::size_of_val(&ws_bytes),
            )?;
            let h = lt::get_matmul_algo_heuristic(handle, desc, a, b, c, c, pref);
            lt::destroy_matmul_pref(pref)?;
            h?
        };
        Ok(LtInt8 {
            handle,
            desc,
            a,
            b,
            c,
            algo: heur.algo,
            ws: stream.alloc_zeros(ws_bytes)?,
        })
    }

    fn run(
        &mut self,
        stream: &Arc<CudaStream>,
        w: &CudaSlice<i8>,
        x: &CudaSlice<i8>,
        out: &mut CudaSlice<i32>,
    ) -> AnyResult<()> {
        let (alpha, beta) = (1i32, 0i32);
        let (wp, _g1) = w.device_ptr(stream);
        let (xp, _g2) = x.device_ptr(stream);
        let (op, _g3) = out.device_ptr_mut(stream);
        let ws_len = self.ws.len();
        let (wsp, _g4) = self.ws.device_ptr_mut(stream);
        // SAFETY: layouts describe exactly these allocations; the stream is theirs.
        unsafe {
            lt::matmul(
                self.handle,
                self.desc,
                &alpha as *const _ as *const c_void,
                &beta as *const _ as *const c_void,
                wp as *const c_void,
                self.a,
                xp as *const c_void,
                self.b,
                op as *const c_void,
                self.c,
                op as *mut c_void,
                self.c,
                &self.algo,
                wsp as *mut c_void,
                ws_len,
                stream.cu_stream() as *mut _,
            )?;
        }
        Ok(())
    }
}

impl Drop for LtInt8 {
    fn drop(&mut self) {
        // SAFETY: created in new(), destroyed once.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    n: usize,
    k: usize,
    m: usize,
    dgq_us: f64,
    dgq_quant_us: f64,
    fp16_us: f64,
    int8_us: Option<f64>,
    dgq_bytes: f64,
}

fn main() -> AnyResult<()> {
    let args = Args::parse();
    let shapes = parse_shapes(&args.shapes)?;
    let ms = parse_list(&args.ms)?;
    let cfg = gemm_config(&args)?;
    let ctx = open_device(0)?;
    let info = device_info(&ctx)?;
    // One stream, no cross-stream tracking: keeps cudarc's event bookkeeping out of the timings.
    // SAFETY: everything below runs on the single default stream.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.default_stream();
    self_test(&stream)?;
    eprintln!("device: {} ({} SMs)", info.name, info.num_sms);
    eprintln!("launch limits: {:?}", info.limits);
    eprintln!("gemm config: {cfg:?}");

    // Device-to-device copy bandwidth, counting bytes read plus bytes written.
    let copy_bytes = 1usize << 30;
    let src = stream.alloc_zeros::<u8>(copy_bytes)?;
    let mut dst = stream.alloc_zeros::<u8>(copy_bytes)?;
    let copy_us = time_us(&stream, 50.0, |_| {
        stream.memcpy_dtod(&src, &mut dst)?;
        Ok(())
    })?;
    let copy_gbs = 2.0 * copy_bytes as f64 / (copy_us * 1e-6) / 1e9;
    drop((src, dst));
    eprintln!("device-to-device copy: {copy_gbs:.0} GB/s (read + write)");

    let blas = CudaBlas::new(stream.clone())?;
    let lt_handle = lt::create_handle()?;
    let mut rows = Vec::new();
    for &(n, k) in &shapes {
        check_gemm_shape(1, n, k, args.group_size)?;
        let t0 = std::time::Instant::now();
        let w = random_dgq(n, k, args.group_size, (n * 31 + k) as u64)?;
        let host = prepare_host(&w)?;
        drop(w);
        let first = PreparedDgqWeight::upload(&host, &stream)?;
        let nw = copies_for(first.gemm_bytes(), args.rotate_mb);
        let mut dgq_w = vec![first];
        for _ in 1..nw {
            dgq_w.push(PreparedDgqWeight::upload_trusted(&host, &stream)?);
        }
        drop(host);
        let h16 = random_f16(n * k, 7);
        let nh = copies_for(2 * n * k, args.rotate_mb);
        let w16: Vec<CudaSlice<f16>> = (0..nh)
            .map(|_| stream.clone_htod(&h16))
            .collect::<std::result::Result<_, _>>()?;
        drop(h16);
        let h8 = random_i8(n * k, 9);
        let n8 = copies_for(n * k, args.rotate_mb);
        let w8: Vec<CudaSlice<i8>> = (0..n8)
            .map(|_| stream.clone_htod(&h8))
            .collect::<std::result::Result<_, _>>()?;
        drop(h8);
        let max_m = ms.iter().copied().max().unwrap_or(1);
        let mut ws = GemmWorkspace::for_config(&stream, &[(n, k)], max_m, &cfg)?;
        eprintln!(
            "shape {n}x{k}: {nw} DGQ copies ({:.0} MB each), {nh} FP16, {n8} INT8; setup {:.1} s",
            dgq_w[0].gemm_bytes() as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );

        for &m in &ms {
            let xh = stream.clone_htod(&random_f16(m * k, 11 + m as u64))?;
            let mut xq = stream.clone_htod(&random_i8(m * k, 13))?;
            let mut sx = stream.clone_htod(&vec![0.01f32; m])?;
            let mut out = stream.alloc_zeros::<f16>(m * n)?;
            let mut out16 = stream.alloc_zeros::<f16>(m * n)?;
            let mut out32 = stream.alloc_zeros::<i32>(m * n)?;

            let dgq_us = time_us(&stream, args.target_ms, |i| {
                let sc = ActScales::PerToken(&sx);
                w4a8_gemm(
                    &stream,
                    &xq,
                    m,
                    &dgq_w[i % nw],
                    sc,
                    None,
                    &mut out,
                    &mut ws,
                    &cfg,
                )?;
                Ok(())
            })?;
            let dgq_quant_us = time_us(&stream, args.target_ms, |i| {
                quantize_acts_dynamic(&stream, &xh, m, k, None, &mut xq, &mut sx)?;
                w4a8_gemm(
                    &stream,
                    &xq,
                    m,
                    &dgq_w[i % nw],
                    ActScales::PerToken(&sx),
                    None,
                    &mut out,
                    &mut ws,
                    &cfg,
                )?;
                Ok(())
            })?;
            // Y^T[N, M] (column-major) = W[N, K] · X[M, K]^T: op(A) = Wᵀ stored K×N, B = X stored K×M.
            let bcfg = BlasConfig {
                transa: bsys::cublasOperation_t::CUBLAS_OP_T,
                transb: bsys::cublasOperation_t::CUBLAS_OP_N,
                m: n as i32,
                n: m as i32,
                k: k as i32,
                alpha: f16::ONE,
                lda: k as i32,
                ldb: k as i32,
                beta: f16::ZERO,
                ldc: n as i32,
            };
            let fp16_us = time_us(&stream, args.target_ms, |i| {
                // SAFETY: the config matches the allocations' sizes.
                unsafe { blas.gemm(bcfg, &w16[i % nh], &xh, &mut out16)? };
                Ok(())
            })?;
            let int8_us = match LtInt8::new(&stream, lt_handle, m, n, k) {
                Ok(mut l) => Some(time_us(&stream, args.target_ms, |i| {
                    l.run(&stream, &w8[i % n8], &xq, &mut out32)
                })?),
                Err(e) => {
                    eprintln!("cuBLASLt INT8 unavailable for M={m} N={n} K={k}: {e}");
                    None
                }
            };
            let dgq_bytes = (dgq_w[0].gemm_bytes() + m * k + 4 * m + 2 * m * n) as f64;
            let row = Row {
                n,
                k,
                m,
                dgq_us,
                dgq_quant_us,
                fp16_us,
                int8_us,
                dgq_bytes,
            };
            eprintln!(
                "  M={m:5}: dgq {dgq_us:9.1} us, +quant {dgq_quant_us:9.1} us, fp16 {fp16_us:9.1} us, int8 {}",
                int8_us.map_or("n/a".into(), |v| format!("{v:9.1} us"))
            );
            rows.push(row);
        }
    }
    // SAFETY: created above, no longer used.
    unsafe { lt::destroy_handle(lt_handle)? };

    let md = markdown(&rows, copy_gbs, &info);
    println!("{md}");
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("gpu-bench.md"), &md)?;
    std::fs::write(
        args.out_dir.join("gpu-bench.json"),
        serde_json::to_string_pretty(&json(&rows, copy_gbs, &info, &args))?,
    )?;
    Ok(())
}

fn tops(r: &Row, us: f64) -> f64 {
    2.0 * (r.m * r.n * r.k) as f64 / (us * 1e-6) / 1e12
}

fn markdown(rows: &[Row], copy_gbs: f64, info: &DeviceInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Device: {} ({} SMs); device-to-device copy bandwidth {copy_gbs:.0} GB/s (read + write).",
        info.name, info.num_sms
    );
    let _ = writeln!(s, "Times are medians of per-launch means over event-timed batches (µs); weights rotated through > 200 MB.");
    let _ = writeln!(s, "`dgq` = W4A8 GEMM from int8 activations; `dgq+q` adds dynamic activation quantization from f16.");
    let _ = writeln!(
        s,
        "GB/s and % copy count the bytes `dgq` must move (u4 weights + scales + int8 X + f16 Y)."
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| N×K | M | dgq µs | dgq+q µs | cuBLAS FP16 µs | cuBLASLt INT8 µs | dgq TOPS | dgq GB/s | % copy BW | ×FP16 | ×FP16 (dgq+q) | ×INT8 |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let gbs = r.dgq_bytes / (r.dgq_us * 1e-6) / 1e9;
        let _ = writeln!(
            s,
            "| {}×{} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.0} | {:.0}% | {:.2} | {:.2} | {} |",
            r.n,
            r.k,
            r.m,
            r.dgq_us,
            r.dgq_quant_us,
            r.fp16_us,
            r.int8_us.map_or("n/a".into(), |v| format!("{v:.1}")),
            tops(r, r.dgq_us),
            gbs,
            100.0 * gbs / copy_gbs,
            r.fp16_us / r.dgq_us,
            r.fp16_us / r.dgq_quant_us,
            r.int8_us.map_or("n/a".into(), |v| format!("{:.2}", v / r.dgq_us)),
        );
    }
    s
}

fn json(rows: &[Row], copy_gbs: f64, info: &DeviceInfo, args: &Args) -> serde_json::Value {
    serde_json::json!({
        "device": info.name,
        "num_sms": info.num_sms,
        "copy_bandwidth_gbs": copy_gbs,
        "group_size": args.group_size,
        "rotate_mb": args.rotate_mb,
        "gemm_config": format!("{:?}", gemm_config(args).ok()),
        "launch_limits": format!("{:?}", info.limits),
        "rows": rows.iter().map(|r| serde_json::json!({
            "n": r.n, "k": r.k, "m": r.m,
            "dgq_us": r.dgq_us,
            "dgq_with_act_quant_us": r.dgq_quant_us,
            "cublas_fp16_us": r.fp16_us,
            "cublaslt_int8_us": r.int8_us,
            "dgq_tops": tops(r, r.dgq_us),
            "dgq_bytes": r.dgq_bytes,
            "dgq_gbs": r.dgq_bytes / (r.dgq_us * 1e-6) / 1e9,
            "speedup_vs_fp16": r.fp16_us / r.dgq_us,
            "speedup_vs_fp16_with_act_quant": r.fp16_us / r.dgq_quant_us,
            "speedup_vs_int8": r.int8_us.map(|v| v / r.dgq_us),
        })).collect::<Vec<_>>(),
    })
}
