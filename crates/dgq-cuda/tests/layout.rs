//! Host-only tests of the kernel layout (no GPU needed; run everywhere).

use dgq_cuda::layout::{prepare_host, unprepare_host};
use dgq_cuda::Error;
use dgq_testkit::random_dgq;

#[test]
fn prepare_is_a_bijection() {
    for (i, &(n, k, gs)) in [
        (128, 128, 64),
        (128, 256, 128),
        (256, 384, 128),
        (384, 512, 256),
        (128, 1024, 64),
    ]
    .iter()
    .enumerate()
    {
        let w = random_dgq(n, k, gs, 17 + i as u64);
        let p = prepare_host(&w).unwrap();
        assert_eq!(p.wq.len(), n * k / 2);
        assert_eq!(
            unprepare_host(&p).unwrap(),
            w,
            "round trip at {n}x{k} g{gs}"
        );
        // Injective on the codes: changing one code changes the prepared bytes.
        let mut w2 = w.clone();
        let (r, c) = (n - 1, k / 2 + 3);
        let (lo, hi) = dgq_core::quant::dual_grained::q_bounds(
            w2.zeros[[r, c / gs]] as i32,
            w2.s2[[r, c / gs]] as i32,
        );
        if hi > lo {
            w2.q[[r, c]] = if w2.q[[r, c]] as i32 == lo {
                hi as u8
            } else {
                lo as u8
            };
            assert_ne!(prepare_host(&w2).unwrap().wq, p.wq);
        }
    }
}

#[test]
fn fragment_order_matches_the_documented_map() {
    // Row 16r+g+8·(j/2), column 64c + 32(j%2) + 16(i%2) + 4t + i/2 sits in nibble i of word j.
    let w = random_dgq(128, 256, 128, 5);
    let p = prepare_host(&w).unwrap();
    let kc = 256 / 64;
    for &(rt, c, lane, j, i) in &[
        (0usize, 0usize, 0usize, 0usize, 0usize),
        (3, 2, 13, 3, 7),
        (7, 3, 31, 1, 4),
        (5, 1, 6, 2, 1),
    ] {
        let (g, t) = (lane / 4, lane % 4);
        let row = rt * 16 + g + 8 * (j / 2);
        let col = c * 64 + 32 * (j % 2) + 16 * (i % 2) + 4 * t + i / 2;
        let byte = p.wq[((rt * kc + c) * 32 + lane) * 16 + j * 4 + i / 2];
        let nib = (byte >> (4 * (i % 2))) & 15;
        let qmin = p.qmin[row * 2 + col / 128];
        assert_eq!(nib + qmin, w.q[[row, col]]);
        // Byte-wise dequant of that nibble gives W_s8.
        let meta = p.meta[(rt * 2 + col / 128) * 8 + g];
        let (s2, a) = if j / 2 == 0 {
            (meta & 0xff, (meta >> 8) & 0xff)
        } else {
            ((meta >> 16) & 0xff, meta >> 24)
        };
        let w8 = (((nib as u32 * s2 + a) & 0xff) ^ 0x80) as u8 as i8;
        assert_eq!(w8, w.to_int8()[[row, col]]);
    }
}

/// What the kernels do with one lane's 16 prepared bytes and its meta word (`dequant` in
/// `cuda/common.cuh`): `a[s][r]` is the int8 A-fragment register `r` of k-step `s`.
fn emulate_dequant(p: [u32; 4], meta: u32) -> [[u32; 4]; 2] {
    let dq =
        |nib: u32, s2: u32, abias: u32| (nib.wrapping_mul(s2).wrapping_add(abias)) ^ 0x8080_8080;
    let (s_lo, a_lo) = (meta & 0xff, ((meta >> 8) & 0xff) * 0x0101_0101);
    let (s_hi, a_hi) = ((meta >> 16) & 0xff, (meta >> 24) * 0x0101_0101);
    let lo = |w: u32| w & 0x0f0f_0f0f;
    let hi = |w: u32| (w >> 4) & 0x0f0f_0f0f;
    [
        [
            dq(lo(p[0]), s_lo, a_lo),
            dq(lo(p[2]), s_hi, a_hi),
            dq(hi(p[0]), s_lo, a_lo),
            dq(hi(p[2]), s_hi, a_hi),
        ],
        [
            dq(lo(p[1]), s_lo, a_lo),
            dq(lo(p[3]), s_hi, a_hi),
            dq(hi(p[1]), s_lo, a_lo),
            dq(hi(p[3]), s_hi, a_hi),
        ],
    ]
}

#[test]
fn dequantized_fragments_are_the_mma_a_operand_in_natural_k_order() {
    // PTX m16n8k32 (.s8) A fragment, which the per-warp slice of wgmma m64nNk32 shares: byte b
    // of register r holds row g + 8·(r % 2), column 4t + b + 16·(r / 2) of the k-step. The
    // kernels feed the B operand in natural K order (TMA copies of the activations; 4-byte
    // words 4t, 16 + 4t, … of each 64-wide chunk in the mma.sync kernels), so every weight
    // must sit at its natural column: emulate the dequant and compare with W_s8 everywhere.
    for (i, &(n, k, gs)) in [(128, 256, 128), (256, 384, 64), (128, 512, 256)]
        .iter()
        .enumerate()
    {
        let w = random_dgq(n, k, gs, 40 + i as u64);
        let w8 = w.to_int8();
        let p = prepare_host(&w).unwrap();
        let (kc, ng) = (k / 64, k / gs);
        for rt in 0..n / 16 {
            for c in 0..kc {
                for lane in 0..32 {
                    let (g, t) = (lane / 4, lane % 4);
                    let base = ((rt * kc + c) * 32 + lane) * 16;
                    let words: [u32; 4] = std::array::from_fn(|j| {
                        u32::from_le_bytes(p.wq[base + 4 * j..base + 4 * j + 4].try_into().unwrap())
                    });
                    let meta = p.meta[(rt * ng + c * 64 / gs) * 8 + g];
                    let a = emulate_dequant(words, meta);
                    for (s, regs) in a.iter().enumerate() {
                        for (r, reg) in regs.iter().enumerate() {
                            for (b, byte) in reg.to_le_bytes().iter().enumerate() {
                                let row = rt * 16 + g + 8 * (r % 2);
                                let col = c * 64 + 32 * s + 16 * (r / 2) + 4 * t + b;
                                assert_eq!(
                                    *byte as i8,
                                    w8[[row, col]],
                                    "{n}x{k} g{gs}: tile {rt} chunk {c} lane {lane} k-step {s} reg {r} byte {b}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn unsupported_shapes_are_typed_errors() {
    let w = random_dgq(64, 256, 128, 1);
    assert!(
        matches!(prepare_host(&w), Err(Error::Unsupported { .. })),
        "N = 64"
    );
    let w = random_dgq(128, 192, 64, 1);
    assert!(
        matches!(prepare_host(&w), Err(Error::Unsupported { .. })),
        "K = 192"
    );
    let w = random_dgq(128, 256, 32, 1);
    assert!(
        matches!(prepare_host(&w), Err(Error::Unsupported { .. })),
        "g = 32"
    );
    // K not a multiple of the group size: dgq-core's own error.
    let mut w = random_dgq(128, 256, 128, 1);
    w.group_size = 96;
    assert!(matches!(prepare_host(&w), Err(Error::Core(_))));
    // A corrupt prepared weight is rejected on the way back.
    let mut p = prepare_host(&random_dgq(128, 256, 128, 2)).unwrap();
    p.meta[0] &= !0xff; // S2 = 0
    assert!(matches!(unprepare_host(&p), Err(Error::Layout(_))));
}

#[test]
fn without_kernels_every_call_is_a_typed_error() {
    if dgq_cuda::BUILT_WITH_CUDA {
        eprintln!("built with CUDA: the stub path is not compiled in");
        return;
    }
    assert!(matches!(
        dgq_cuda::open_device(0),
        Err(Error::NotBuiltWithCuda)
    ));
}
