//! Reference pipeline: perplexity of a float or quantized model, on the library API.
//!
//! ```text
//! cargo run --release --example eval_ppl -- MODEL TEXT [PACKED_FILE] [WINDOWS]
//! ```
//! With PACKED_FILE (from `dgq quantize` or the `quantize_llama` example, made from the same
//! MODEL) the quantized linears and smoothed norms are loaded into the float model first.

use std::path::{Path, PathBuf};

use dgq::core::format;
use dgq::model::{apply_packed, perplexity, Exec, Model, PplConfig, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, text, rest @ ..] = args.as_slice() else {
        return Err("usage: eval_ppl MODEL TEXT [PACKED_FILE] [WINDOWS]".into());
    };
    let model_path = PathBuf::from(model_path);
    let mut model = Model::load(&model_path)?;
    let tok = Tokenizer::load(&model_path)?;
    if let Some(packed) = rest.first() {
        let n = apply_packed(
            &mut model,
            &format::read(Path::new(packed))?,
            Exec::FakeQuant,
        )?;
        eprintln!("loaded {n} quantized linears from {packed}");
    }
    let windows = rest.get(1).map(|w| w.parse()).transpose()?.unwrap_or(10);
    let tokens = tok.encode(&std::fs::read_to_string(text)?)?;
    let cfg = PplConfig {
        ctx: 512,
        stride: None,
        max_windows: Some(windows),
    };
    let r = perplexity(&model, &tokens, &cfg, &mut |p| {
        eprintln!(
            "window {}/{}: ppl {:.3}",
            p.window, p.windows, p.running_ppl
        )
    })?;
    println!(
        "ppl {:.4} over {} tokens ({} windows of 512)",
        r.ppl, r.tokens, r.windows
    );
    Ok(())
}
