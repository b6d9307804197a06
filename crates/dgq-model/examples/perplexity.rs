//! Perplexity and forward throughput of a model on a text file.
//!
//! ```text
//! cargo run --release -p dgq-model --example perplexity -- MODEL TEXT [--ctx 512] [--windows N] [--stride S]
//! ```
//! MODEL is a Hugging Face directory or a GGUF file (its tokenizer is used); TEXT is e.g.
//! WikiText-2's `wiki.test.tokens`. See `dgq_model::perplexity` for the protocol.

use std::path::PathBuf;
use std::time::Instant;

use dgq_model::{perplexity, Model, PplConfig, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut pos = Vec::new();
    let mut cfg = PplConfig {
        ctx: 512,
        stride: None,
        max_windows: None,
    };
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize, Box<dyn std::error::Error>> {
            Ok(args
                .next()
                .ok_or(format!("{name} needs a value"))?
                .parse()?)
        };
        match a.as_str() {
            "--ctx" => cfg.ctx = num("--ctx")?,
            "--windows" => cfg.max_windows = Some(num("--windows")?),
            "--stride" => cfg.stride = Some(num("--stride")?),
            _ => pos.push(PathBuf::from(a)),
        }
    }
    let [model_path, text_path] = pos.as_slice() else {
        return Err("usage: perplexity MODEL TEXT [--ctx N] [--windows N] [--stride N]".into());
    };
    let t0 = Instant::now();
    let model = Model::load(model_path)?;
    let tok = Tokenizer::load(model_path)?;
    eprintln!(
        "loaded {} layers, d={} in {:.1}s: {:?}",
        model.layers.len(),
        model.hidden_size(),
        t0.elapsed().as_secs_f64(),
        model.load_info.tensor_types
    );
    let text = dgq_model::perplexity::read_text(text_path)?;
    let t1 = Instant::now();
    let tokens = tok.encode(&text)?;
    eprintln!(
        "{} tokens from {} bytes in {:.1}s",
        tokens.len(),
        text.len(),
        t1.elapsed().as_secs_f64()
    );
    let t2 = Instant::now();
    let r = perplexity(&model, &tokens, &cfg, &mut |p| {
        eprintln!(
            "window {}/{}: running ppl {:.4} ({:.0} tok/s)",
            p.window,
            p.windows,
            p.running_ppl,
            (p.window * cfg.ctx) as f64 / t2.elapsed().as_secs_f64()
        );
    })?;
    let secs = t2.elapsed().as_secs_f64();
    println!(
        "ppl {:.4} | nll {:.2} over {} scored tokens | {} windows of {} | forward {:.1} tok/s ({:.1}s, {} rayon threads)",
        r.ppl, r.nll, r.tokens, r.windows, cfg.ctx, (r.windows * cfg.ctx) as f64 / secs, secs, rayon::current_num_threads()
    );
    Ok(())
}
