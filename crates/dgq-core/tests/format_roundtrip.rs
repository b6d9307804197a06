//! Write → read round trips for every scheme, determinism, atomic writes, inspect, and
//! compatibility with the safetensors crate.

mod format_common;

use std::collections::BTreeMap;
use std::path::Path;

use dgq_core::act::ActQuant;
use dgq_core::format::{self, LayerWeight, PackedLayer, PackedModel, Scheme};
use dgq_core::quant::Bits;
use dgq_core::Error;
use format_common::*;
use ndarray::{Array1, ArrayD, IxDyn};
use proptest::prelude::*;

/// A random valid model: every scheme, random shapes (odd group counts included), random
/// activation modes, optional bias/smoothing, float tensors with arbitrary finite bit patterns.
fn random_model(seed: u64, n: usize, groups: usize, half_g: usize) -> PackedModel {
    let mut r = SplitMix64::new(seed);
    let g = 2 * half_g;
    let k = g * groups;
    let mut m = PackedModel::new(format!("src-{seed}"), "proptest");
    if r.below(2) == 0 {
        m.metadata.insert(
            "note".into(),
            format!("ünïcode {seed} \"quoted\" \\ \u{1F600}"),
        );
    }
    let act = |r: &mut SplitMix64| match r.below(3) {
        0 => ActQuant::None,
        1 => ActQuant::DynamicPerToken,
        _ => ActQuant::StaticPerTensor {
            scale: f32::from_bits(r.next_u64() as u32 & 0x7eff_ffff).max(f32::MIN_POSITIVE),
        },
    };
    let extras = |r: &mut SplitMix64, mut l: PackedLayer, n: usize, k: usize| {
        l.act = act(r);
        if r.below(2) == 0 {
            l.bias = Some(Array1::from_shape_fn(n, |_| r.any_f32()));
        }
        if r.below(2) == 0 {
            l.smooth = Some(Array1::from_shape_fn(k, |_| {
                r.any_f32().abs().max(f32::MIN_POSITIVE)
            }));
        }
        l
    };
    let any_scales =
        |r: &mut SplitMix64, w: &mut dgq_core::SymIntWeight| w.scales.mapv_inplace(|_| r.pos_f16());
    let d = dgq_weight(&mut r, n, k, g);
    let l = extras(&mut r, PackedLayer::new(LayerWeight::Dgq(d)), n, k);
    m.layers.insert("model.layers.0.self_attn.q_proj".into(), l);
    let mut w4 = sym_weight(&mut r, Bits::Int4, n + 1, k, g);
    any_scales(&mut r, &mut w4);
    let l = extras(&mut r, PackedLayer::new(LayerWeight::SymInt(w4)), n + 1, k);
    m.layers.insert("model.layers.0.mlp.up_proj".into(), l);
    // int8 per-channel (group = K) or grouped; K may be odd for int8.
    let k8 = k + (seed % 2) as usize;
    let g8 = if r.below(2) == 0 { k8 } else { 1 };
    let mut w8 = sym_weight(&mut r, Bits::Int8, n, k8, g8);
    any_scales(&mut r, &mut w8);
    let l = extras(&mut r, PackedLayer::new(LayerWeight::SymInt(w8)), n, k8);
    m.layers.insert("model.layers.0.mlp.down_proj".into(), l);
    let shape: Vec<usize> = (0..r.below(4)).map(|_| 1 + r.below(4) as usize).collect();
    m.layers.insert(
        "norm".into(),
        PackedLayer::new(LayerWeight::Float(ArrayD::from_shape_fn(
            IxDyn(&shape),
            |_| r.any_f32(),
        ))),
    );
    let f16s = ArrayD::from_shape_fn(IxDyn(&[n, k]), |_| r.any_f16());
    let l = extras(&mut r, PackedLayer::new(LayerWeight::F16(f16s)), n, k);
    m.layers.insert("lm_head".into(), l);
    let bf = ArrayD::from_shape_fn(IxDyn(&[1 + r.below(5) as usize]), |_| r.any_bf16());
    m.layers.insert(
        "model.embed_tokens.scale".into(),
        PackedLayer::new(LayerWeight::Bf16(bf)),
    );
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_is_exact_and_deterministic(seed in any::<u64>(), n in 1usize..6, groups in 1usize..5, half_g in 1usize..9) {
        let m = random_model(seed, n, groups, half_g);
        let b = format::to_bytes(&m).unwrap();
        let back = format::from_bytes(&b).unwrap();
        prop_assert_eq!(&back, &m);
        // Same model, same bytes (also after a trip through the reader).
        prop_assert_eq!(format::to_bytes(&back).unwrap(), b.clone());
        prop_assert_eq!(format::to_bytes(&m.clone()).unwrap(), b.clone());
        // The safetensors crate reads the file; tensors are aligned to their element size.
        let st = safetensors::SafeTensors::deserialize(&b).unwrap();
        let ds = data_start(&b);
        prop_assert_eq!(ds % 8, 0);
        for (name, v) in st.tensors() {
            let off = v.data().as_ptr() as usize - b.as_ptr() as usize - ds;
            prop_assert_eq!(off % (v.dtype().bitsize() / 8), 0, "{} at {}", name, off);
        }
        // Re-serialized by the safetensors crate (hash-ordered metadata, its own tensor
        // order), the file still reads the same: readers must not depend on our byte layout.
        prop_assert_eq!(format::from_bytes(&Raw::parse(&b).to_bytes()).unwrap(), m.clone());
        // inspect agrees with the model.
        let info = format::inspect_bytes(&b).unwrap();
        prop_assert_eq!(info.layers.len(), m.layers.len());
        for (li, (name, l)) in info.layers.iter().zip(&m.layers) {
            prop_assert_eq!(&li.name, name);
            prop_assert_eq!(li.scheme, l.weight.scheme());
            prop_assert_eq!(&li.shape, &l.weight.shape());
            prop_assert_eq!(li.group_size, l.weight.group_size());
            prop_assert_eq!(li.act, l.act);
            prop_assert_eq!((li.has_bias, li.has_smooth), (l.bias.is_some(), l.smooth.is_some()));
        }
        prop_assert_eq!(info.layers.iter().map(|l| l.bytes).sum::<u64>() + 8 + info.header_bytes, b.len() as u64);
    }
}

#[test]
fn file_round_trip_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.dgq.safetensors");
    let m = random_model(7, 3, 3, 4);
    format::write(&p, &m).unwrap();
    assert_eq!(format::read(&p).unwrap(), m);
    assert_eq!(std::fs::read(&p).unwrap(), format::to_bytes(&m).unwrap());
    let info = format::inspect(&p).unwrap();
    assert_eq!(
        info,
        format::inspect_bytes(&std::fs::read(&p).unwrap()).unwrap()
    );
    let dgq = info
        .layers
        .iter()
        .find(|l| l.scheme == Scheme::DgqW4)
        .unwrap();
    assert_eq!(
        (dgq.shape.clone(), dgq.group_size, dgq.bits),
        (vec![3, 24], Some(8), 4)
    );
    // Overwriting replaces the file.
    let m2 = random_model(8, 2, 1, 1);
    format::write(&p, &m2).unwrap();
    assert_eq!(format::read(&p).unwrap(), m2);
    assert_eq!(entries(dir.path()), vec!["m.dgq.safetensors".to_string()]);
}

#[test]
fn empty_model_round_trips() {
    let m = PackedModel::new("", "");
    assert_eq!(
        format::from_bytes(&format::to_bytes(&m).unwrap()).unwrap(),
        m
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn dgq(m: &mut PackedModel) -> &mut dgq_core::DualGrainedWeight {
    match &mut m.layers.get_mut(GOLDEN_DGQ).unwrap().weight {
        LayerWeight::Dgq(w) => w,
        _ => panic!(),
    }
}

fn invalid_model() -> PackedModel {
    let mut m = golden_model();
    dgq(&mut m).s2[[1, 1]] = 0;
    m
}

#[test]
fn invalid_model_is_rejected_without_touching_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.dgq.safetensors");
    std::fs::write(&p, b"previous contents").unwrap();
    let e = format::write(&p, &invalid_model()).unwrap_err();
    match &e {
        Error::Invariant { tensor, problem } => {
            assert_eq!(tensor, "blk.0.attn.qkv.s2");
            assert!(problem.contains("s2[1, 1] = 0"), "{problem}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(e.to_string().contains("blk.0.attn.qkv.s2"));
    assert_eq!(std::fs::read(&p).unwrap(), b"previous contents");
    assert_eq!(entries(dir.path()), vec!["m.dgq.safetensors".to_string()]);
    assert!(matches!(
        invalid_model().validate(),
        Err(Error::Invariant { .. })
    ));
}

#[test]
fn failed_io_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = golden_model();
    // Missing parent directory: the temp file cannot be created.
    let p = dir.path().join("no/such/dir/m.dgq.safetensors");
    assert!(matches!(format::write(&p, &m), Err(Error::Io { path, .. }) if path == p));
    // The target is a non-empty directory: the final rename fails after the data was written.
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    assert!(matches!(format::write(&target, &m), Err(Error::Io { .. })));
    assert_eq!(entries(&target), vec!["keep".to_string()]);
    assert_eq!(
        entries(dir.path()),
        vec!["taken".to_string()],
        "temporary file left behind"
    );
}

#[test]
fn writer_rejects_bad_names_keys_and_values() {
    let base = || golden_model();
    // Reserved extra key.
    let mut m = base();
    m.metadata.insert("layers".into(), "x".into());
    assert!(matches!(
        format::to_bytes(&m),
        Err(Error::Config {
            field: "metadata",
            ..
        })
    ));
    // Bad layer names.
    for name in ["", "a\u{0}b", "line\nbreak"] {
        let mut m = base();
        m.layers.insert(
            name.into(),
            PackedLayer::new(LayerWeight::Float(ArrayD::zeros(IxDyn(&[2])))),
        );
        assert!(
            matches!(format::to_bytes(&m), Err(Error::Invariant { .. })),
            "{name:?}"
        );
    }
    // Each invalid value names its tensor.
    let check = |f: &dyn Fn(&mut PackedModel), tensor: &str| {
        let mut m = base();
        f(&mut m);
        match format::to_bytes(&m) {
            Err(Error::Invariant { tensor: t, .. }) => assert_eq!(t, tensor),
            other => panic!("{tensor}: {other:?}"),
        }
    };
    check(&|m| dgq(m).zeros[[0, 0]] = 16, "blk.0.attn.qkv.zeros");
    check(&|m| dgq(m).s1[2] = half::f16::NAN, "blk.0.attn.qkv.s1");
    check(&|m| dgq(m).q[[0, 0]] = 16, "blk.0.attn.qkv.qweight");
    check(
        &|m| {
            let w = dgq(m);
            w.zeros[[0, 0]] = 0;
            w.s2[[0, 0]] = 127;
            w.q[[0, 0]] = 2;
        },
        "blk.0.attn.qkv.qweight",
    );
    check(
        &|m| dgq(m).s1 = Array1::from_elem(3, half::f16::ONE),
        "blk.0.attn.qkv.s1",
    );
    check(
        &|m| m.layers.get_mut(GOLDEN_DGQ).unwrap().bias = Some(Array1::zeros(5)),
        "blk.0.attn.qkv.bias",
    );
    check(
        &|m| {
            m.layers
                .get_mut(GOLDEN_INT4)
                .unwrap()
                .smooth
                .as_mut()
                .unwrap()[3] = 0.0
        },
        "blk.0.mlp.up.smooth",
    );
    check(
        &|m| m.layers.get_mut(GOLDEN_INT4).unwrap().bias = Some(Array1::from_elem(3, f32::NAN)),
        "blk.0.mlp.up.bias",
    );
    check(
        &|m| m.layers.get_mut(GOLDEN_INT8).unwrap().act = ActQuant::StaticPerTensor { scale: 0.0 },
        "blk.0.mlp.down",
    );
    check(
        &|m| {
            m.layers.get_mut(GOLDEN_INT8).unwrap().act = ActQuant::StaticPerTensor {
                scale: f32::INFINITY,
            }
        },
        "blk.0.mlp.down",
    );
    check(
        &|m| m.layers.get_mut(GOLDEN_NORM).unwrap().act = ActQuant::DynamicPerToken,
        "blk.0.norm",
    );
    check(
        &|m| m.layers.get_mut(GOLDEN_NORM).unwrap().bias = Some(Array1::zeros(16)),
        "blk.0.norm.bias",
    );
    check(
        &|m| {
            m.layers.get_mut(GOLDEN_NORM).unwrap().weight =
                LayerWeight::Float(ArrayD::from_elem(IxDyn(&[2]), f32::NAN))
        },
        "blk.0.norm.weight",
    );
    check(
        &|m| {
            m.layers.get_mut(GOLDEN_NORM).unwrap().weight =
                LayerWeight::Float(ArrayD::zeros(IxDyn(&[2, 0])))
        },
        "blk.0.norm.weight",
    );
    check(
        &|m| {
            let l = m.layers.get_mut(GOLDEN_INT8).unwrap();
            if let LayerWeight::SymInt(w) = &mut l.weight {
                w.q[[0, 0]] = -128;
            }
        },
        "blk.0.mlp.down.qweight",
    );
}

#[test]
fn extras_and_odd_names_round_trip() {
    let mut m = golden_model();
    let mut extra = BTreeMap::new();
    extra.insert("dgq.calibration.tokens".to_string(), "262144".to_string());
    extra.insert("".to_string(), "empty key is allowed".to_string());
    m.metadata.extend(extra);
    let w = LayerWeight::Float(ArrayD::from_elem(IxDyn(&[1]), 1.0));
    for name in [
        "weight",
        "a.weight",
        "日本語 layer",
        "x.",
        ".y",
        "__metadata__",
    ] {
        m.layers.insert(name.into(), PackedLayer::new(w.clone()));
    }
    let b = format::to_bytes(&m).unwrap();
    assert_eq!(format::from_bytes(&b).unwrap(), m);
}

#[test]
fn memory_layout_does_not_change_the_bytes() {
    use ndarray::ShapeBuilder;
    // The same values held column-major (Fortran order) serialize to the same row-major bytes.
    let m = golden_model();
    let mut f = m.clone();
    let to_f = |a: &ndarray::Array2<i8>| {
        let mut c = ndarray::Array2::<i8>::zeros(a.dim().f());
        c.assign(a);
        c
    };
    let w = dgq(&mut f);
    let mut q = ndarray::Array2::<u8>::zeros(w.q.dim().f());
    q.assign(&w.q);
    w.q = q;
    w.zeros = to_f(&w.zeros);
    w.s2 = to_f(&w.s2);
    assert!(w.q.as_slice().is_none(), "test needs a non-row-major array");
    if let LayerWeight::F16(e) = &mut f.layers.get_mut(GOLDEN_F16).unwrap().weight {
        let mut c = ArrayD::zeros(IxDyn(e.shape()).f());
        c.assign(e);
        *e = c;
    }
    assert_eq!(format::to_bytes(&f).unwrap(), format::to_bytes(&m).unwrap());
}
