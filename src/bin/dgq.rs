//! The `dgq` command line: quantize a model, evaluate its perplexity, inspect a packed file.
//!
//! ```text
//! dgq quantize --model M.gguf --method dgq --calib wiki.valid.tokens --out m.dgq.safetensors
//! dgq eval --model M.gguf --quantized m.dgq.safetensors --data wiki.test.tokens --windows 40
//! dgq inspect m.dgq.safetensors
//! ```
//! Errors print one line (`error: …`) and exit with status 1. Arguments and output paths are
//! checked before any work starts; no output may be one of the inputs. A closed stdout pipe
//! (`dgq inspect f | head -1`) ends the program quietly with status 0.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use dgq::core::format;
use dgq::model::packed::FINGERPRINT_KEY;
use dgq::model::quantize::{effective_group_size, mean_out_nmse_by_slot, Method, QuantizeConfig};
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
    /// Group size of W4 weights: a power of two from 16 to 1024. A layer whose K it does not
    /// divide uses the largest power of two that divides K (printed before the run).
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

/// A failed write to stdout, told apart in `main`: a closed pipe is not an error of the command.
#[derive(Debug)]
struct StdoutError(std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

/// `writeln!` to the command's output; a failure becomes a [`StdoutError`].
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(StdoutError)?
    };
}

/// `eprintln!` that never panics: progress notes are not worth dying for when stderr is gone.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = match cli.cmd {
        Cmd::Quantize(a) => quantize(a, &mut out),
        Cmd::Eval(a) => eval(a, &mut out),
        Cmd::Inspect(a) => inspect(a, &mut out),
    }
    .and_then(|()| out.flush().map_err(|e| StdoutError(e).into()));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(StdoutError(io)) = e.downcast_ref::<StdoutError>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            note!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, joined by ": ". A cause whose text its parent already
/// ends with (`I/O error on p: No such file…` over the io error itself) is said once.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || msg.ends_with(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
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

/// Group sizes `--group-size` accepts: powers of two, as every W4 scheme and kernel uses.
const GROUP_SIZES: std::ops::RangeInclusive<usize> = 16..=1024;

fn check_group_size(g: usize) -> Result<()> {
    if !g.is_power_of_two() || !GROUP_SIZES.contains(&g) {
        bail!(
            "--group-size {g} is not supported: use a power of two from {} to {} (32, 64 and 128 \
             are the usual sizes; the CUDA kernels need a multiple of 64)",
            GROUP_SIZES.start(),
            GROUP_SIZES.end()
        );
    }
    Ok(())
}

/// Prints, before the run, which linears cannot use the requested group size and what they use
/// instead (the largest power of two dividing K), one line per K; an error if some K has none.
fn note_group_fallbacks(model: &Model, requested: usize) -> Result<()> {
    let mut by_k: BTreeMap<usize, usize> = BTreeMap::new();
    for layer in &model.layers {
        for &slot in layer.slots() {
            *by_k.entry(layer.linear(slot)?.in_features()).or_default() += 1;
        }
    }
    for (k, count) in by_k {
        match effective_group_size(k, requested) {
            Some(g) if g == requested => {}
            Some(g) => note!(
                "note: --group-size {requested} does not divide K = {k}: {count} linears with \
                 that K use group size {g}, the largest power of two dividing K"
            ),
            None => {
                bail!("--group-size {requested}: K = {k} is odd: no power-of-two group divides it")
            }
        }
    }
    Ok(())
}

/// Refuses, before any work, outputs that cannot be written or that would replace an input (the
/// same file by inode, so also through a symbolic or hard link) or each other. A model directory
/// counts as all the files in it.
fn check_outputs(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<()> {
    for (i, &(flag, out)) in outputs.iter().enumerate() {
        if out.is_dir() {
            bail!("{flag} {} is a directory, not a file", out.display());
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            bail!(
                "{flag} {}: the folder {} does not exist",
                out.display(),
                dir.display()
            );
        }
        // The output is written through a temporary file next to it: try making one now.
        tempfile::Builder::new()
            .prefix(".dgq-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| {
                format!(
                    "{flag} {}: cannot create files in {}",
                    out.display(),
                    dir.display()
                )
            })?;
        for &(what, input) in inputs {
            let files: Vec<PathBuf> = if input.is_dir() {
                std::fs::read_dir(input)
                    .with_context(|| format!("reading the folder {}", input.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect()
            } else {
                vec![input.to_path_buf()]
            };
            if let Some(f) = files.iter().find(|f| same_file(out, f)) {
                bail!(
                    "{flag} {} is the same file as {what} {}: refusing to overwrite an input",
                    out.display(),
                    f.display()
                );
            }
        }
        for &(other_flag, other) in &outputs[..i] {
            if same_file(out, other) {
                bail!(
                    "{flag} {} and {other_flag} {} are the same file",
                    out.display(),
                    other.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether two paths name the same file: the same inode when both exist, else the same
/// canonical folder and file name.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(ma), Ok(mb)) => {
            use std::os::unix::fs::MetadataExt;
            ma.dev() == mb.dev() && ma.ino() == mb.ino()
        }
        _ => match (canonical(a), canonical(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// `p` with its folder canonicalized (the file itself may not exist yet).
fn canonical(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(p.file_name()?))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    dgq::core::fsio::write_atomic(path, |w| w.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

fn quantize(a: QuantizeArgs, out: &mut dyn Write) -> Result<()> {
    let method = Method::parse(&a.method)?;
    let grouped = matches!(
        method,
        Method::Rtn | Method::SmoothQuant | Method::Dgq | Method::DgqStatic
    );
    if grouped {
        check_group_size(a.group_size)?;
    }
    if a.windows == 0 {
        bail!("--windows 0: need at least one calibration window");
    }
    if a.ctx == 0 {
        bail!("--ctx 0: calibration windows need at least one token");
    }
    if !a.model.exists() {
        bail!("model {} does not exist", a.model.display());
    }
    if !a.calib.exists() {
        bail!("calibration text {} does not exist", a.calib.display());
    }
    let mut outputs = vec![("--out", a.out.as_path())];
    if let Some(r) = &a.report {
        outputs.push(("--report", r.as_path()));
    }
    check_outputs(
        &outputs,
        &[
            ("--model", a.model.as_path()),
            ("--calib", a.calib.as_path()),
        ],
    )?;
    let t0 = Instant::now();
    let (mut model, tok) = load(&a.model)?;
    if grouped {
        note_group_fallbacks(&model, a.group_size)?;
    }
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
    note!(
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
    // The error names the path.
    format::write(&a.out, &packed)?;
    note!(
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
        note!("  mean output NMSE {slot:<10} {e:.3e} (activation quantization alone {ea:.3e})");
    }
    if let Some(worst) = report
        .linears
        .iter()
        .max_by(|x, y| x.out_nmse.total_cmp(&y.out_nmse))
    {
        note!("  worst layer: {} NMSE {:.3e}", worst.name, worst.out_nmse);
    }
    if let Some(r) = &a.report {
        let mut json = serde_json::to_value(&report)?;
        json["wall_seconds"] = secs.into();
        write_atomic(r, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    say!(out, "{}", a.out.display());
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn eval(a: EvalArgs, out: &mut dyn Write) -> Result<()> {
    if a.windows == Some(0) {
        bail!("--windows 0: need at least one evaluation window (leave it out for all)");
    }
    if a.ctx < 2 {
        bail!("--ctx {}: a window needs at least 2 tokens", a.ctx);
    }
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
            note!("applied {n} quantized linears ({})", packed.method);
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
        say!(out, "{j}");
    } else {
        say!(
            out,
            "{method}: ppl {:.4} over {} tokens ({} windows of {}), {:.1}s, {:.0} tok/s",
            r.ppl,
            r.tokens,
            r.windows,
            a.ctx,
            secs,
            tps
        );
    }
    Ok(())
}

fn inspect(a: InspectArgs, out: &mut dyn Write) -> Result<()> {
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
        say!(out, "{j}");
        return Ok(());
    }
    say!(
        out,
        "format v{} | method: {} | source: {}",
        info.format_version,
        info.method,
        info.source_model
    );
    for (k, v) in &info.metadata {
        say!(out, "  {k} = {v}");
    }
    say!(
        out,
        "{:<48} {:<9} {:>12} {:>5} {:<16} {:>10} {:>8}",
        "layer",
        "scheme",
        "shape",
        "group",
        "act",
        "bytes",
        "B/weight"
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
        say!(
            out,
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
    say!(
        out,
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
