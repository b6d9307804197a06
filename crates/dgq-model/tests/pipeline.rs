//! The calibration + quantization pipeline end to end on a tiny random LLaMA: quantize → save →
//! load → apply → same logits; determinism of the file; fake-quant vs integer execution.

mod common;

use common::*;
use dgq_core::format;
use dgq_model::quantize::effective_group_size;
use dgq_model::{
    apply_packed, perplexity, quantize_model, sample_windows, CalibConfig, Exec, Method, Model,
    PplConfig, QuantizeConfig,
};
use ndarray::Array2;
use safetensors::tensor::Dtype;

fn spec() -> TinyLlama {
    TinyLlama {
        vocab: 64,
        d: 32,
        ff: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        hd: 8,
        ..Default::default()
    }
}

fn load(dir: &std::path::Path) -> Model {
    Model::from_hf_dir(dir).unwrap()
}

fn tiny_dir(seed: u64) -> tempfile::TempDir {
    let t = spec();
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(
        dir.path(),
        &t.config_json(),
        &t.tensors(seed),
        1,
        Dtype::F32,
    );
    dir
}

fn text_tokens(n: usize, seed: u64) -> Vec<u32> {
    use rand::Rng;
    let mut r = rng(seed);
    (0..n).map(|_| r.random_range(0..64u32)).collect()
}

fn cfg(method: Method) -> QuantizeConfig {
    QuantizeConfig {
        method,
        group_size: 16,
        finequant: dgq_core::quant::fine_grained::FineQuantConfig {
            min_group_size: 8,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn nmse(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    num / den
}

#[test]
fn quantize_save_load_eval_every_method() {
    let dir = tiny_dir(3);
    let tokens = text_tokens(2000, 9);
    let windows = sample_windows(
        &tokens,
        &CalibConfig {
            windows: 4,
            ctx: 48,
            seed: 1,
        },
    )
    .unwrap();
    let eval_toks = &tokens[1000..];
    let fp = load(dir.path());
    let probe: Vec<u32> = eval_toks[..40].to_vec();
    let fp_logits = fp.forward(&probe).unwrap();
    let ppl_cfg = PplConfig {
        ctx: 40,
        stride: None,
        max_windows: Some(5),
    };
    let fp_ppl = perplexity(&fp, eval_toks, &ppl_cfg, &mut |_| {})
        .unwrap()
        .ppl;
    for method in Method::ALL {
        let mut m = load(dir.path());
        let (packed, report) = quantize_model(&mut m, &windows, &cfg(method), &mut |_| {}).unwrap();
        let q_logits = m.forward(&probe).unwrap();
        // Through the file format and a fresh model: bit-identical logits.
        let bytes = format::to_bytes(&packed).unwrap();
        let back = format::from_bytes(&bytes).unwrap();
        let mut fresh = load(dir.path());
        let n = apply_packed(&mut fresh, &back, Exec::FakeQuant).unwrap();
        let f_logits = fresh.forward(&probe).unwrap();
        assert_eq!(q_logits, f_logits, "{method:?}: saved model differs");
        let e = nmse(&fp_logits, &q_logits);
        let ppl = perplexity(&fresh, eval_toks, &ppl_cfg, &mut |_| {})
            .unwrap()
            .ppl;
        eprintln!("{method:?}: {n} linears, logits NMSE {e:.3e}, ppl {ppl:.4} (fp {fp_ppl:.4})");
        match method {
            Method::Fp => {
                assert_eq!(n, 0);
                assert_eq!(e, 0.0);
                assert!(report.linears.is_empty());
            }
            _ => {
                assert_eq!(n, 14, "{method:?}");
                assert_eq!(report.linears.len(), 14);
                // This random model amplifies errors (its ppl is above the vocabulary size), so
                // the bounds are loose for 4-bit weights (seen: RTN 0.14) and tight for 8-bit
                // (seen: 1.5e-3); the real accuracy numbers come from SmolLM2 (README).
                let bound = if method == Method::W8a8 { 5e-3 } else { 0.5 };
                assert!(e < bound, "{method:?}: logits NMSE {e} above {bound}");
                assert!(ppl.is_finite());
                if method == Method::W8a8 {
                    assert!(
                        (ppl / fp_ppl - 1.0).abs() < 0.02,
                        "{method:?}: ppl {ppl} vs {fp_ppl}"
                    );
                }
                for l in &report.linears {
                    assert!(l.out_nmse.is_finite() && l.out_nmse < 0.5, "{l:?}");
                    assert!(l.weight_out_mse.is_some_and(|v| v.is_finite()));
                }
            }
        }
    }
}

#[test]
fn same_seed_same_file_other_seed_other_file() {
    let dir = tiny_dir(5);
    let tokens = text_tokens(1500, 2);
    let run = |seed: u64| {
        let w = sample_windows(
            &tokens,
            &CalibConfig {
                windows: 3,
                ctx: 32,
                seed,
            },
        )
        .unwrap();
        let mut m = load(dir.path());
        let (p, _) = quantize_model(&mut m, &w, &cfg(Method::DgqStatic), &mut |_| {}).unwrap();
        format::to_bytes(&p).unwrap()
    };
    let a = run(11);
    assert_eq!(a, run(11), "same seed must give the same bytes");
    assert_ne!(
        a,
        run(12),
        "static scales depend on the calibration windows"
    );
}

#[test]
fn fake_quant_matches_integer_execution_on_a_layer() {
    let dir = tiny_dir(8);
    let tokens = text_tokens(1500, 4);
    let w = sample_windows(
        &tokens,
        &CalibConfig {
            windows: 3,
            ctx: 32,
            seed: 0,
        },
    )
    .unwrap();
    for method in [
        Method::Dgq,
        Method::DgqStatic,
        Method::W8a8,
        Method::FineQuant,
    ] {
        let mut m = load(dir.path());
        let (p, _) = quantize_model(&mut m, &w, &cfg(method), &mut |_| {}).unwrap();
        let mut int = load(dir.path());
        apply_packed(&mut int, &p, Exec::Integer).unwrap();
        let h = m.embed(&tokens[..40], 0).unwrap();
        let a = m.layers[0].forward(h.view(), 0).unwrap();
        let b = int.layers[0].forward(h.view(), 0).unwrap();
        let e = nmse(&a, &b);
        // Same codes and scales; only the f32 rounding of the epilogue/accumulation differs.
        assert!(e < 1e-9, "{method:?}: fake vs integer NMSE {e}");
        assert!(int.layers[0].q_proj.op().kind().ends_with("-int"));
    }
}

#[test]
fn packed_file_from_another_model_is_refused() {
    let dir = tiny_dir(1);
    let tokens = text_tokens(600, 1);
    let w = vec![tokens[..32].to_vec()];
    let mut m = load(dir.path());
    let (p, _) = quantize_model(&mut m, &w, &cfg(Method::Rtn), &mut |_| {}).unwrap();
    let other = TinyLlama { ff: 48, ..spec() };
    let odir = tempfile::tempdir().unwrap();
    write_hf_dir(
        odir.path(),
        &other.config_json(),
        &other.tensors(1),
        1,
        Dtype::F32,
    );
    let mut o = load(odir.path());
    assert!(apply_packed(&mut o, &p, Exec::FakeQuant).is_err());
    // A model with more layers than the file: refused, not silently half-quantized.
    let deeper = TinyLlama {
        layers: 3,
        ..spec()
    };
    let ddir = tempfile::tempdir().unwrap();
    write_hf_dir(
        ddir.path(),
        &deeper.config_json(),
        &deeper.tensors(1),
        1,
        Dtype::F32,
    );
    let mut dm = load(ddir.path());
    assert!(apply_packed(&mut dm, &p, Exec::FakeQuant).is_err());
    // Empty calibration is an error, not a panic.
    let mut m = load(dir.path());
    assert!(quantize_model(&mut m, &[], &cfg(Method::Dgq), &mut |_| {}).is_err());
}

#[test]
fn group_size_falls_back_to_a_divisor() {
    assert_eq!(effective_group_size(576, 128), Some(64));
    assert_eq!(effective_group_size(896, 128), Some(128));
    assert_eq!(effective_group_size(4864, 1024), Some(256));
    assert_eq!(effective_group_size(96, 100), Some(32));
    assert_eq!(effective_group_size(6, 128), Some(2));
    assert_eq!(effective_group_size(576, 1), None);
    assert_eq!(effective_group_size(0, 128), None);
    assert_eq!(effective_group_size(576, 64), Some(64));
    assert_eq!(effective_group_size(1536, 128), Some(128));
    assert_eq!(effective_group_size(7, 128), None);
}

#[test]
fn calibration_checks_the_residual_adds() {
    // Public fields let a caller install a last linear whose output is one column wide: a
    // residual add would broadcast it over the stream. The forward refuses it, and so must the
    // calibration, which drives the same stages.
    let dir = tiny_dir(4);
    let t = spec();
    let windows = vec![text_tokens(24, 3)];
    let narrow = |k: usize| {
        let w = Array2::from_shape_fn((1, k), |(_, j)| 0.01 * (j as f32 + 1.0));
        dgq_model::Linear::float(w, None).unwrap()
    };
    for method in [Method::Rtn, Method::W8a8] {
        let mut m = load(dir.path());
        m.layers[0].o_proj = narrow(t.heads * t.hd);
        assert!(matches!(
            m.forward(&windows[0]),
            Err(dgq_model::Error::Shape { .. })
        ));
        let r = quantize_model(&mut m, &windows, &cfg(method), &mut |_| {});
        assert!(
            matches!(r, Err(dgq_model::Error::Shape { ref what, .. }) if what.contains("O")),
            "{method:?}: {r:?}"
        );
        let mut m = load(dir.path());
        if let dgq_model::Mlp::SwiGlu { down, .. } = &mut m.layers[1].mlp {
            *down = narrow(t.ff);
        }
        let r = quantize_model(&mut m, &windows, &cfg(method), &mut |_| {});
        assert!(
            matches!(r, Err(dgq_model::Error::Shape { ref what, .. }) if what.contains("Down")),
            "{method:?}: {r:?}"
        );
    }
}

#[test]
fn packed_file_is_tied_to_the_model_it_was_made_from() {
    use dgq_model::packed::{check_source, model_fingerprint, SourceCheck, FINGERPRINT_KEY};
    use dgq_model::Error;
    let dir = tiny_dir(1);
    let tokens = text_tokens(600, 1);
    let probe = &tokens[100..140];
    let w = vec![tokens[..32].to_vec()];
    let mut m = load(dir.path());
    let fp = model_fingerprint(&m).unwrap();
    assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
    let (p, _) = quantize_model(&mut m, &w, &cfg(Method::Dgq), &mut |_| {}).unwrap();
    assert_eq!(p.metadata.get(FINGERPRINT_KEY), Some(&fp));
    // A quantized model has no float weights left to identify it by.
    assert!(matches!(model_fingerprint(&m), Err(Error::Unsupported(_))));
    let p = format::from_bytes(&format::to_bytes(&p).unwrap()).unwrap();
    // The same weights at another path: verified and applied.
    let same = tiny_dir(1);
    let mut s = load(same.path());
    assert_eq!(check_source(&s, &p).unwrap(), SourceCheck::Verified);
    assert_eq!(apply_packed(&mut s, &p, Exec::FakeQuant).unwrap(), 14);
    // Another model of the very same shapes: a typed error, and the model is left as it was.
    let other_dir = tiny_dir(2);
    let mut other = load(other_dir.path());
    let before = other.forward(probe).unwrap();
    match apply_packed(&mut other, &p, Exec::FakeQuant) {
        Err(Error::OtherModel {
            expected, found, ..
        }) => {
            assert_eq!(expected, fp);
            assert_ne!(found, fp);
        }
        r => panic!("expected OtherModel, got {r:?}"),
    }
    assert_eq!(other.forward(probe).unwrap(), before);
    assert!(other.layers.iter().all(|l| l.q_proj.as_float().is_some()));
    // A file that records no fingerprint (older dgq, other writers) still applies, unverified.
    let mut old = p.clone();
    old.metadata.remove(FINGERPRINT_KEY);
    let old = format::from_bytes(&format::to_bytes(&old).unwrap()).unwrap();
    assert_eq!(check_source(&other, &old).unwrap(), SourceCheck::Unverified);
    assert_eq!(apply_packed(&mut other, &old, Exec::FakeQuant).unwrap(), 14);
}

#[test]
fn packed_file_of_other_shapes_names_the_layer() {
    use dgq_model::Error;
    let dir = tiny_dir(1);
    let tokens = text_tokens(600, 1);
    let w = vec![tokens[..32].to_vec()];
    let mut m = load(dir.path());
    let (p, _) = quantize_model(&mut m, &w, &cfg(Method::Rtn), &mut |_| {}).unwrap();
    let layer_of = |t: TinyLlama| {
        let d = tempfile::tempdir().unwrap();
        write_hf_dir(d.path(), &t.config_json(), &t.tensors(1), 1, Dtype::F32);
        let mut o = load(d.path());
        match apply_packed(&mut o, &p, Exec::FakeQuant) {
            Err(Error::PackedMismatch { layer, reason }) => {
                assert!(o.layers.iter().all(|l| l.q_proj.as_float().is_some()));
                (layer, reason)
            }
            r => panic!("expected PackedMismatch, got {r:?}"),
        }
    };
    let (layer, reason) = layer_of(TinyLlama { ff: 48, ..spec() });
    assert_eq!(layer, "model.layers.0.mlp.gate_proj");
    assert!(
        reason.contains("[64, 32]") && reason.contains("[48, 32]"),
        "{reason}"
    );
    let (layer, _) = layer_of(TinyLlama {
        layers: 3,
        ..spec()
    });
    assert_eq!(layer, "model.layers.2.self_attn.q_proj");
    let (layer, _) = layer_of(TinyLlama {
        layers: 1,
        ..spec()
    });
    assert!(layer.starts_with("model.layers.1."), "{layer}");
}
