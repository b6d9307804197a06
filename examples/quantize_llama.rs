//! Reference pipeline: quantize a LLaMA-family model to W4A8 with DGQ, on the library API.
//!
//! ```text
//! cargo run --release --example quantize_llama -- MODEL CALIB_TEXT OUT [GROUP_SIZE]
//! ```
//! MODEL is a GGUF file or a Hugging Face directory; CALIB_TEXT any text (e.g. WikiText-2 valid).
//! The `dgq quantize` command does the same with more options and progress bars.

use std::path::PathBuf;

use dgq::core::format;
use dgq::model::{
    quantize_model, sample_windows, CalibConfig, Method, Model, QuantizeConfig, Tokenizer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, calib, out, rest @ ..] = args.as_slice() else {
        return Err("usage: quantize_llama MODEL CALIB_TEXT OUT [GROUP_SIZE]".into());
    };
    let group_size = rest.first().map(|g| g.parse()).transpose()?.unwrap_or(64);
    let model_path = PathBuf::from(model_path);

    // 1. The float model and its tokenizer.
    let mut model = Model::load(&model_path)?;
    let tok = Tokenizer::load(&model_path)?;

    // 2. Calibration: random windows of the calibration text (seeded, so reproducible).
    let text = std::fs::read_to_string(calib)?;
    let windows = sample_windows(&tok.encode(&text)?, &CalibConfig::default())?;

    // 3. Layer by layer: smoothing, Hessians, two-phase search, INT8 activations.
    let cfg = QuantizeConfig {
        method: Method::Dgq,
        group_size,
        ..Default::default()
    };
    let (packed, report) = quantize_model(&mut model, &windows, &cfg, &mut |p| {
        eprintln!("layer {}/{}: {}", p.layer, p.layers, p.stage)
    })?;

    // 4. Per-layer output error, then the packed file.
    for l in &report.linears {
        println!(
            "{:<40} g{:<4} output NMSE {:.3e}",
            l.name, l.group_size, l.out_nmse
        );
    }
    format::write(std::path::Path::new(out), &packed)?;
    println!("wrote {out} in {:.1}s", report.seconds);
    Ok(())
}
