//! Every input a caller controls is validated: bad configs, shapes and non-finite data are typed
//! errors, never panics.

use dgq_core::quant::search::{search, search_with_hessian, Hessian, MAX_GRID};
use dgq_core::{DgqConfig, Error, LossMode};
use ndarray::Array2;

fn w(n: usize, k: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, k), |(r, c)| ((r * 7 + c * 3) % 11) as f32 * 0.1 - 0.5)
}

fn x(t: usize, k: usize) -> Array2<f32> {
    Array2::from_shape_fn((t, k), |(r, c)| ((r * 5 + c * 13) % 17) as f32 * 0.2 - 1.6)
}

fn cfg(g: usize) -> DgqConfig {
    DgqConfig {
        group_size: g,
        ..DgqConfig::default()
    }
}

#[test]
fn config_validation() {
    assert!(DgqConfig::default().validate().is_ok());
    let bad = [
        DgqConfig {
            group_size: 0,
            ..cfg(8)
        },
        DgqConfig {
            group_size: 7,
            ..cfg(8)
        },
        DgqConfig {
            phase1_grid: 0,
            ..cfg(8)
        },
        DgqConfig {
            phase2_grid: 0,
            ..cfg(8)
        },
        DgqConfig {
            phase2_grid: MAX_GRID + 1,
            ..cfg(8)
        },
        DgqConfig {
            phase1_min_ratio: 0.0,
            ..cfg(8)
        },
        DgqConfig {
            phase1_min_ratio: 1.5,
            ..cfg(8)
        },
        DgqConfig {
            phase2_min_ratio: -0.2,
            ..cfg(8)
        },
        DgqConfig {
            phase2_min_ratio: f32::NAN,
            ..cfg(8)
        },
        DgqConfig {
            phase1_min_ratio: f32::INFINITY,
            ..cfg(8)
        },
    ];
    for c in bad {
        assert!(
            matches!(c.validate(), Err(Error::Config { .. })),
            "{c:?} accepted"
        );
        // The search entry points validate too.
        assert!(matches!(
            search(w(2, 16).view(), x(4, 16).view(), &c),
            Err(Error::Config { .. })
        ));
    }
    // Edge values are fine.
    let edge = DgqConfig {
        phase1_grid: 1,
        phase2_grid: 1,
        phase1_min_ratio: 1.0,
        phase2_min_ratio: 1.0,
        ..cfg(8)
    };
    let q = search(w(3, 16).view(), x(5, 16).view(), &edge).unwrap();
    q.validate().unwrap();
}

#[test]
fn shape_errors() {
    // Activations with the wrong K, or no tokens.
    assert!(matches!(
        search(w(2, 16).view(), x(4, 8).view(), &cfg(8)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        search(w(2, 16).view(), x(0, 16).view(), &cfg(8)),
        Err(Error::Shape { .. })
    ));
    // Group size not dividing K, odd, or an empty weight.
    assert!(matches!(
        search(w(2, 12).view(), x(4, 12).view(), &cfg(8)),
        Err(Error::GroupSize { .. })
    ));
    assert!(matches!(
        search(w(0, 16).view(), x(4, 16).view(), &cfg(8)),
        Err(Error::Shape { .. })
    ));
    // Hessian of another K, or without tokens.
    let mut h = Hessian::new(8);
    h.add_batch(x(4, 8).view()).unwrap();
    assert!(matches!(
        search_with_hessian(w(2, 16).view(), &h, &cfg(8)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        search_with_hessian(w(2, 16).view(), &Hessian::new(16), &cfg(8)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Hessian::new(16).add_batch(x(4, 8).view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Hessian::new(16).merge(&h),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Hessian::from_matrix(Array2::<f64>::zeros((3, 4)).view(), 1),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn direct_mode_needs_activations() {
    let mut h = Hessian::new(16);
    h.add_batch(x(4, 16).view()).unwrap();
    let c = DgqConfig {
        loss: LossMode::Direct,
        ..cfg(8)
    };
    assert!(matches!(
        search_with_hessian(w(2, 16).view(), &h, &c),
        Err(Error::Config { .. })
    ));
}

#[test]
fn non_finite_inputs() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut wb = w(3, 16);
        wb[[1, 5]] = bad;
        assert!(matches!(
            search(wb.view(), x(4, 16).view(), &cfg(8)),
            Err(Error::NonFinite { .. })
        ));
        let mut xb = x(4, 16);
        xb[[2, 9]] = bad;
        let e = search(w(3, 16).view(), xb.view(), &cfg(8));
        assert!(
            matches!(e, Err(Error::NonFinite { ref index, .. }) if index == &vec![2, 9]),
            "{e:?}"
        );
        assert!(matches!(
            Hessian::new(16).add_batch(xb.view()),
            Err(Error::NonFinite { .. })
        ));
        let mut hm = Array2::<f64>::eye(4);
        hm[[0, 3]] = bad as f64;
        assert!(matches!(
            Hessian::from_matrix(hm.view(), 1),
            Err(Error::NonFinite { .. })
        ));
    }
    // Finite activations whose Gram matrix overflows f64 cannot be searched with.
    let mut h = Hessian::new(16);
    h.add_batch(Array2::from_elem((2, 16), 1e30f32).view())
        .unwrap();
    h.add_batch(Array2::from_elem((2, 16), 3e38f32).view())
        .unwrap();
    assert!(matches!(
        search_with_hessian(w(2, 16).view(), &h, &cfg(8)),
        Err(Error::NonFinite { .. })
    ));
}
