//! Host-only tests of the kernel layout (no GPU needed; run everywhere).

mod common;

use common::random_weight;
use dgq_cuda::layout::{prepare_host, unprepare_host};
use dgq_cuda::Error;

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
        let w = random_weight(n, k, gs, 17 + i as u64);
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
    let w = random_weight(128, 256, 128, 5);
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

#[test]
fn unsupported_shapes_are_typed_errors() {
    let w = random_weight(64, 256, 128, 1);
    assert!(
        matches!(prepare_host(&w), Err(Error::Unsupported { .. })),
        "N = 64"
    );
    let w = random_weight(128, 192, 64, 1);
    assert!(
        matches!(prepare_host(&w), Err(Error::Unsupported { .. })),
        "K = 192"
    );
    let w = random_weight(128, 256, 32, 1);
    assert!(
        matches!(prepare_host(&w), Err(Error::Unsupported { .. })),
        "g = 32"
    );
    // K not a multiple of the group size: dgq-core's own error.
    let mut w = random_weight(128, 256, 128, 1);
    w.group_size = 96;
    assert!(matches!(prepare_host(&w), Err(Error::Core(_))));
    // A corrupt prepared weight is rejected on the way back.
    let mut p = prepare_host(&random_weight(128, 256, 128, 2)).unwrap();
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
