//! FP8-E4M3 (`e4m3fn`): all 256 codes against a table built here from the bit-field definition,
//! round trips, round-to-nearest-even at every midpoint, saturation, subnormals, and the FP8
//! activation quantizers.

use dgq_core::act::{
    array_to_e4m3, e4m3_array_to_f32, e4m3_slice_to_f32, e4m3_to_f32, f32_slice_to_e4m3,
    f32_to_e4m3, quantize_fp8_per_tensor, quantize_fp8_per_token, quantize_fp8_static,
};
use dgq_core::Error;
use ndarray::{arr2, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// The value of code `c` from the definition: sign bit, 4 exponent bits (bias 7), 3 mantissa bits;
/// exponent 0 is subnormal `(m/8)·2^(1−7)`; `S.1111.111` is NaN; no infinities.
fn expected(c: u8) -> Option<f64> {
    let s = if c >> 7 == 1 { -1.0 } else { 1.0 };
    let e = ((c >> 3) & 0xf) as i32;
    let m = (c & 0x7) as f64;
    if e == 15 && m == 7.0 {
        return None;
    }
    let mag = if e == 0 {
        (m / 8.0) * 2f64.powi(1 - 7)
    } else {
        (1.0 + m / 8.0) * 2f64.powi(e - 7)
    };
    Some(s * mag)
}

fn next_up(x: f32) -> f32 {
    // Positive finite x only.
    f32::from_bits(x.to_bits() + 1)
}
fn next_down(x: f32) -> f32 {
    if x == 0.0 {
        -f32::from_bits(1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

#[test]
fn decode_all_256_codes() {
    let mut nans = 0;
    for c in 0..=255u8 {
        let v = e4m3_to_f32(c);
        match expected(c) {
            None => {
                assert!(v.is_nan(), "code {c:#04x} must be NaN");
                nans += 1;
            }
            Some(e) => {
                assert_eq!(v as f64, e, "code {c:#04x}");
                assert_eq!(v.is_sign_negative(), c >= 0x80, "sign of code {c:#04x}");
            }
        }
    }
    assert_eq!(nans, 2);
    assert_eq!(e4m3_to_f32(0x7e), 448.0);
    assert_eq!(e4m3_to_f32(0xfe), -448.0);
    assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
    assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
    assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn encode_decode_round_trips_every_finite_code() {
    for c in 0..=255u8 {
        if expected(c).is_some() {
            assert_eq!(f32_to_e4m3(e4m3_to_f32(c)), c, "code {c:#04x}");
        }
    }
}

#[test]
fn midpoints_round_to_even_and_neighbours_round_to_nearest() {
    // Non-negative finite codes in increasing order are 0x00..=0x7e.
    for lo in 0u8..0x7e {
        let hi = lo + 1;
        let (a, b) = (expected(lo).unwrap(), expected(hi).unwrap());
        let mid = ((a + b) / 2.0) as f32;
        assert_eq!(mid as f64, (a + b) / 2.0, "midpoint must be exact in f32");
        let even = if lo % 2 == 0 { lo } else { hi };
        assert_eq!(
            f32_to_e4m3(mid),
            even,
            "tie between {lo:#04x} and {hi:#04x}"
        );
        assert_eq!(
            f32_to_e4m3(-mid),
            0x80 | even,
            "negative tie between {lo:#04x} and {hi:#04x}"
        );
        assert_eq!(
            f32_to_e4m3(next_down(mid)),
            lo,
            "just below the midpoint of {lo:#04x}/{hi:#04x}"
        );
        assert_eq!(
            f32_to_e4m3(next_up(mid)),
            hi,
            "just above the midpoint of {lo:#04x}/{hi:#04x}"
        );
        // Interior points go to the nearer code.
        let q1 = (a + (b - a) * 0.25) as f32;
        assert_eq!(f32_to_e4m3(q1), lo);
        let q3 = (a + (b - a) * 0.75) as f32;
        assert_eq!(f32_to_e4m3(q3), hi);
    }
}

#[test]
fn saturation_nan_and_tiny_values() {
    for v in [
        448.0f32,
        448.5,
        463.9,
        464.0,
        480.0,
        1e6,
        f32::MAX,
        f32::INFINITY,
    ] {
        assert_eq!(f32_to_e4m3(v), 0x7e, "{v}");
        assert_eq!(f32_to_e4m3(-v), 0xfe, "{}", -v);
    }
    assert_eq!(f32_to_e4m3(f32::NAN), 0x7f);
    assert_eq!(f32_to_e4m3(-f32::NAN), 0x7f);
    // Subnormal range: quantum 2^-9; half of it ties to 0, anything above rounds up.
    let q = 2f32.powi(-9);
    assert_eq!(f32_to_e4m3(q), 0x01);
    assert_eq!(f32_to_e4m3(q * 0.5), 0x00);
    assert_eq!(f32_to_e4m3(next_up(q * 0.5)), 0x01);
    assert_eq!(f32_to_e4m3(q * 1.5), 0x02);
    assert_eq!(f32_to_e4m3(q * 2.5), 0x02);
    assert_eq!(f32_to_e4m3(q * 7.5), 0x08); // ties to the even code 0x08 = 2^-6 (smallest normal)
    assert_eq!(f32_to_e4m3(1e-40), 0x00); // f32 subnormal
    assert_eq!(f32_to_e4m3(-1e-40), 0x80);
    assert_eq!(f32_to_e4m3(0.0), 0x00);
    assert_eq!(f32_to_e4m3(-0.0), 0x80);
}

#[test]
fn slice_and_array_helpers() {
    let src = [0.0f32, 1.0, -2.5, 500.0, 0.3];
    let mut codes = [0u8; 5];
    f32_slice_to_e4m3(&src, &mut codes).unwrap();
    assert_eq!(codes, src.map(f32_to_e4m3));
    let mut back = [0.0f32; 5];
    e4m3_slice_to_f32(&codes, &mut back).unwrap();
    assert_eq!(back, codes.map(e4m3_to_f32));
    assert!(matches!(
        f32_slice_to_e4m3(&src, &mut [0u8; 4]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        e4m3_slice_to_f32(&codes, &mut [0.0; 6]),
        Err(Error::Shape { .. })
    ));
    let a = arr2(&[[1.0f32, -3.0], [0.001, 1000.0]]);
    let c = array_to_e4m3(a.view());
    assert_eq!(c, a.mapv(f32_to_e4m3));
    assert_eq!(e4m3_array_to_f32(c.view()), c.mapv(e4m3_to_f32));
}

#[test]
fn fp8_activation_quantizers() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let d = Normal::new(0.0f32, 3.0).unwrap();
    let mut x = Array2::from_shape_fn((6, 64), |_| d.sample(&mut rng));
    x.row_mut(2).fill(0.0);
    let a = quantize_fp8_per_token(x.view()).unwrap();
    assert_eq!(a.scales.len(), 6);
    assert_eq!(a.scales[2], 0.0);
    assert!(a.q.row(2).iter().all(|&c| c == 0));
    let deq = a.dequantize().unwrap();
    for r in [0usize, 1, 3, 4, 5] {
        let amax = x.row(r).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(a.scales[r], amax / 448.0);
        let inv = 448.0 / amax;
        for c in 0..64 {
            assert_eq!(
                a.q[[r, c]],
                f32_to_e4m3(x[[r, c]] * inv),
                "recipe at [{r}, {c}]"
            );
            // E4M3 has 3 mantissa bits: relative error ≤ 2^-4 for normals, absolute ≤ 2^-10·scale below.
            let err = (deq[[r, c]] - x[[r, c]]).abs();
            assert!(
                err <= (x[[r, c]].abs() / 16.0 + a.scales[r] * 2f32.powi(-10)) * 1.0001,
                "[{r}, {c}] err {err}"
            );
        }
        assert!(
            a.q.row(r).iter().any(|&c| c & 0x7f == 0x7e),
            "row max maps to ±448"
        );
    }
    let t = quantize_fp8_per_tensor(x.view()).unwrap();
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert_eq!(t.scales.to_vec(), vec![amax / 448.0]);
    assert_eq!(t.q, x.mapv(|v| f32_to_e4m3(v * (448.0 / amax))));
    let st = quantize_fp8_static(x.view(), 0.01).unwrap();
    assert_eq!(st.q, x.mapv(|v| f32_to_e4m3(v * (1.0 / 0.01))));
    assert!(
        st.q.iter().any(|&c| c == 0x7e),
        "static scale saturates at 448"
    );
    let mut xn = x.clone();
    xn[[4, 5]] = f32::NEG_INFINITY;
    assert!(
        matches!(quantize_fp8_per_tensor(xn.view()), Err(Error::NonFinite { index, .. }) if index == vec![4, 5])
    );
    assert!(matches!(
        quantize_fp8_static(x.view(), -1.0),
        Err(Error::Config { .. })
    ));
}

#[test]
fn fp8_per_token_uses_exactly_x_times_448_over_amax() {
    use rand::Rng;
    // Find a row [amax, x] where 448/amax and 1/(amax/448) encode x differently.
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    let (amax, x) = (0..1_000_000)
        .find_map(|_| {
            let amax: f32 = rng.random_range(1.0f32..2.0);
            let x: f32 = rng.random_range(0.0f32..amax);
            let (a, b) = (
                f32_to_e4m3(x * (448.0 / amax)),
                f32_to_e4m3(x * (1.0 / (amax / 448.0))),
            );
            let c = f32_to_e4m3(x / (amax / 448.0));
            (a != b && a != c).then_some((amax, x))
        })
        .expect("a distinguishing input exists");
    let q = quantize_fp8_per_token(arr2(&[[amax, x]]).view()).unwrap();
    assert_eq!(q.q[[0, 1]], f32_to_e4m3(x * (448.0 / amax)));
}
