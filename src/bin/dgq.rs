//! The `dgq` command line: quantize a model, evaluate its perplexity, inspect a packed file.
//!
//! ```text
//! dgq quantize --model M.gguf --method dgq --calib wiki.valid.tokens --out m.dgq.safetensors
//! dgq eval --model M.gguf --quantized m.dgq.safetensors --data wiki.test.tokens --windows 40
//! dgq inspect m.dgq.safetensors
//! ```
//! Errors print one line (`error: …`) and exit with status 1.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use dgq::core::format;
use dgq::model::packed::FINGERPRINT_KEY;
use dgq::model::quantize::{mean_out_nmse_by_slot, Method, QuantizeConfig};
use dgq::model::{
    apply_packed, perplexity, quantize_model, sample_windows, CalibConfig, Exec, Model, PplConfig,
    Tokenizer,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "dgq",
    version,
    about = "W4A8 LLM quantization with Dual Grained Quantization (DGQ)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Calibrate and quantize a model layer by layer; write a packed file.
    Quantize(QuantizeArgs),
    /// Perplexity of a model (optionally with a packed file applied) on a text file.
    Eval(EvalArgs),
    /// List the layers of a packed file: scheme, shape, group size, activation mode, bytes.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct QuantizeArgs {
    /// Model: a GGUF file or a Hugging Face directory (config.json + safetensors).
    #[arg(long)]
    model: PathBuf,
    /// fp, w8a8, rtn, smoothquant, dgq, dgq-static or finequant.
    #[arg(long, default_value = "dgq")]
    method: String,
    /// Calibration text (e.g. WikiText-2 valid); windows are drawn from it at random.
    #[arg(long)]
    calib: PathBuf,
    /// Output packed file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Calibration windows.
    #[arg(long, default_value_t = 32)]
    windows: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Seed of the calibration window positions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Group size of W4 weights; per layer the largest even divisor of K not above it is used.
    #[arg(long, default_value_t = 128)]
    group_size: usize,
    /// SmoothQuant α.
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// DGQ percentile clipping: fraction of channels above the threshold.
    #[arg(long, default_value_t = 0.005)]
    percentile: f64,
    /// DGQ phase 1 grid (per-group clipping ratios 1.0 → 0.8).
    #[arg(long, default_value_t = 20)]
    phase1_grid: usize,
    /// DGQ phase 2 grid (per-channel s1 ratios 1.0 → 0.2).
    #[arg(long, default_value_t = 80)]
    phase2_grid: usize,
    /// Skip the per-layer output-error probe (saves the Hessians of non-DGQ methods).
    #[arg(long)]
    no_layer_errors: bool,
    /// Also write the per-layer report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Model: a GGUF file or a Hugging Face directory.
    #[arg(long)]
    model: PathBuf,
    /// Packed file from `dgq quantize` (made from the same model); float model if absent.
    #[arg(long)]
    quantized: Option<PathBuf>,
    /// Evaluation text (e.g. WikiText-2 wiki.test.tokens).
    #[arg(long)]
    data: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate only the first N windows (all if absent).
    #[arg(long)]
    windows: Option<usize>,
    /// Run the integer reference GEMMs (INT8×INT4/INT8, INT32 accumulation) instead of fake-quant.
    #[arg(long)]
    integer: bool,
    /// Keep the quantized weights but leave activations in float (W4A16 / W8A16): separates the
    /// weight error from the activation error of a packed file.
    #[arg(long)]
    float_acts: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// A packed file.
    file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Quantize(a) => quantize(a),
        Cmd::Eval(a) => eval(a),
        Cmd::Inspect(a) => inspect(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined by ": ".
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_prefix(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

fn load(model: &Path) -> Result<(Model, Tokenizer)> {
    if !model.exists() {
        bail!("model {} does not exist", model.display());
    }
    let m = Model::load(model).with_context(|| format!("loading model {}", model.display()))?;
    let t = Tokenizer::load(model)
        .with_context(|| format!("loading the tokenizer of {}", model.display()))?;
    Ok((m, t))
}

fn read_tokens(tok: &Tokenizer, path: &Path) -> Result<Vec<u32>> {
    let text = dgq::model::perplexity::read_text(path)
        .with_context(|| format!("reading {}", path.display()))?;
    tok.encode(&text)
        .with_context(|| format!("tokenizing {}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    let method = Method::parse(&a.method)?;
    if !a.calib.exists() {
        bail!("calibration text {} does not exist", a.calib.display());
    }
    let t0 = Instant::now();
    let (mut model, tok) = load(&a.model)?;
    let tokens = read_tokens(&tok, &a.calib)?;
    let windows = sample_windows(
        &tokens,
        &CalibConfig {
            windows: a.windows,
            ctx: a.ctx,
            seed: a.seed,
        },
    )
    .context("drawing calibration windows")?;
    eprintln!(
        "loaded {} ({} layers, d={}) and {} calibration tokens in {:.1}s; {} windows × {} (seed {})",
        a.model.display(),
        model.layers.len(),
        model.hidden_size(),
        tokens.len(),
        t0.elapsed().as_secs_f64(),
        a.windows,
        a.ctx,
        a.seed
    );
    let cfg = QuantizeConfig {
        method,
        group_size: a.group_size,
        smoothquant_alpha: a.alpha,
        percentile_top_fraction: a.percentile,
        dgq: dgq::core::DgqConfig {
            phase1_grid: a.phase1_grid,
            phase2_grid: a.phase2_grid,
            ..Default::default()
        },
        layer_errors: !a.no_layer_errors,
        ..Default::default()
    };
    let pb = bar(
        model.layers.len() as u64,
        &format!("quantize {}", method.name()),
    );
    let t1 = Instant::now();
    let (mut packed, report) = quantize_model(&mut model, &windows, &cfg, &mut |p| {
        pb.set_position(p.layer as u64);
        pb.set_message(p.stage);
    })?;
    pb.finish_and_clear();
    let secs = t1.elapsed().as_secs_f64();
    packed.source_model = file_name(&a.model);
    packed
        .metadata
        .insert("dgq.calib_file".into(), file_name(&a.calib));
    packed
        .metadata
        .insert("dgq.calib_seed".into(), a.seed.to_string());
    let groups: BTreeMap<usize, usize> = report.linears.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.group_size).or_default() += 1;
        m
    });
    packed.metadata.insert(
        "dgq.group_sizes".into(),
        groups
            .iter()
            .map(|(g, n)| format!("g{g}×{n}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    format::write(&a.out, &packed).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "quantized {} linears with {} in {:.1}s (forward {:.1}s, statistics {:.1}s, weight quantization {:.1}s); group sizes used: {}",
        report.linears.len(),
        method.name(),
        secs,
        report.seconds_forward,
        report.seconds_stats,
        report.seconds_quantize,
        packed.metadata.get("dgq.group_sizes").map(String::as_str).unwrap_or("-")
    );
    for (slot, e, ea) in mean_out_nmse_by_slot(&report) {
        eprintln!("  mean output NMSE {slot:<10} {e:.3e} (activation quantization alone {ea:.3e})");
    }
    if let Some(worst) = report
        .linears
        .iter()
        .max_by(|x, y| x.out_nmse.total_cmp(&y.out_nmse))
    {
        eprintln!("  worst layer: {} NMSE {:.3e}", worst.name, worst.out_nmse);
    }
    if let Some(r) = &a.report {
        let mut json = serde_json::to_value(&report)?;
        json["wall_seconds"] = secs.into();
        write_atomic(r, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    println!("{}", a.out.display());
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn eval(a: EvalArgs) -> Result<()> {
    if !a.data.exists() {
        bail!("data file {} does not exist", a.data.display());
    }
    if let Some(q) = &a.quantized {
        if !q.exists() {
            bail!("packed file {} does not exist", q.display());
        }
    }
    let (mut model, tok) = load(&a.model)?;
    let mut method = "fp".to_string();
    if let Some(q) = &a.quantized {
        let mut packed = format::read(q).with_context(|| format!("reading {}", q.display()))?;
        if a.float_acts {
            for l in packed.layers.values_mut() {
                l.act = dgq::core::act::ActQuant::None;
            }
        }
        let exec = if a.integer {
            Exec::Integer
        } else {
            Exec::FakeQuant
        };
        let n = apply_packed(&mut model, &packed, exec)
            .with_context(|| format!("applying {}", q.display()))?;
        if !packed.metadata.contains_key(FINGERPRINT_KEY) {
            eprintln!(
                "warning: {} records no source-model fingerprint (written by an older dgq or \
                 another tool): only its layer shapes could be checked against this model \
                 (its source: {:?})",
                q.display(),
                packed.source_model
            );
        }
        method = packed
            .metadata
            .get("dgq.method")
            .cloned()
            .unwrap_or(packed.method.clone());
        if a.float_acts {
            method.push_str(" (float activations)");
        }
        if !a.json {
            eprintln!("applied {n} quantized linears ({})", packed.method);
        }
    }
    let tokens = read_tokens(&tok, &a.data)?;
    let cfg = PplConfig {
        ctx: a.ctx,
        stride: None,
        max_windows: a.windows,
    };
    let total = a.windows.unwrap_or(tokens.len() / a.ctx.max(1)).max(1);
    let pb = bar(total as u64, &format!("eval {method}"));
    let t = Instant::now();
    let r = perplexity(&model, &tokens, &cfg, &mut |p| {
        pb.set_length(p.windows as u64);
        pb.set_position(p.window as u64);
        pb.set_message(format!("ppl {:.3}", p.running_ppl));
    })?;
    pb.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    let tps = (r.windows * a.ctx) as f64 / secs;
    if a.json {
        let j = serde_json::json!({
            "method": method,
            "ppl": r.ppl,
            "nll": r.nll,
            "tokens": r.tokens,
            "windows": r.windows,
            "ctx": a.ctx,
            "seconds": secs,
            "tokens_per_second": tps,
            "integer": a.integer,
            "float_acts": a.float_acts,
            "model": a.model.display().to_string(),
            "quantized": a.quantized.as_ref().map(|p| p.display().to_string()),
            "data": file_name(&a.data),
        });
        println!("{j}");
    } else {
        println!(
            "{method}: ppl {:.4} over {} tokens ({} windows of {}), {:.1}s, {:.0} tok/s",
            r.ppl, r.tokens, r.windows, a.ctx, secs, tps
        );
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    if !a.file.exists() {
        bail!("packed file {} does not exist", a.file.display());
    }
    let info = format::inspect(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let qbytes: u64 = info
        .layers
        .iter()
        .filter(|l| l.scheme.is_quantized())
        .map(|l| l.bytes)
        .sum();
    let qelems: u64 = info
        .layers
        .iter()
        .filter(|l| l.scheme.is_quantized())
        .map(|l| l.shape.iter().map(|&d| d as u64).product::<u64>())
        .sum();
    if a.json {
        let layers: Vec<_> = info
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.name, "scheme": l.scheme.as_str(), "shape": l.shape,
                    "group_size": l.group_size, "bits": l.bits, "act": l.act,
                    "bias": l.has_bias, "smooth": l.has_smooth, "bytes": l.bytes,
                })
            })
            .collect();
        let j = serde_json::json!({
            "format_version": info.format_version, "source_model": info.source_model,
            "method": info.method, "metadata": info.metadata, "file_bytes": info.file_bytes,
            "quantized_weights": qelems, "quantized_bytes": qbytes,
            "bytes_per_quantized_weight": if qelems > 0 { qbytes as f64 / qelems as f64 } else { 0.0 },
            "layers": layers,
        });
        println!("{j}");
        return Ok(());
    }
    println!(
        "format v{} | method: {} | source: {}",
        info.format_version, info.method, info.source_model
    );
    for (k, v) in &info.metadata {
        println!("  {k} = {v}");
    }
    println!(
        "{:<48} {:<9} {:>12} {:>5} {:<16} {:>10} {:>8}",
        "layer", "scheme", "shape", "group", "act", "bytes", "B/weight"
    );
    for l in &info.layers {
        let elems: u64 = l.shape.iter().map(|&d| d as u64).product();
        let act = match l.act {
            dgq::core::act::ActQuant::None => "none".to_string(),
            dgq::core::act::ActQuant::DynamicPerToken => "int8 per-token".to_string(),
            dgq::core::act::ActQuant::StaticPerTensor { scale } => {
                format!("int8 static {scale:.3e}")
            }
        };
        println!(
            "{:<48} {:<9} {:>12} {:>5} {:<16} {:>10} {:>8.4}",
            l.name,
            l.scheme.as_str(),
            format!("{:?}", l.shape),
            l.group_size.map(|g| g.to_string()).unwrap_or("-".into()),
            act,
            l.bytes,
            l.bytes as f64 / elems.max(1) as f64
        );
    }
    println!(
        "{} layers, {} quantized weights in {} bytes ({:.4} B/weight incl. scales), file {} bytes",
        info.layers.len(),
        qelems,
        qbytes,
        if qelems > 0 {
            qbytes as f64 / qelems as f64
        } else {
            0.0
        },
        info.file_bytes
    );
    Ok(())
}
