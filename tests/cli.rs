//! The `dgq` binary's error path and help: failures are one `error: …` line and a non-zero exit,
//! arguments and output paths are checked before any work, no output replaces an input, and a
//! closed or full stdout is handled without a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dgq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dgq"))
        .args(args)
        .output()
        .expect("the dgq binary runs")
}

fn one_error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(lines[0].starts_with("error: "), "stderr: {err}");
    lines[0].to_string()
}

#[test]
fn missing_model_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("text.txt");
    std::fs::write(&data, "hello world").unwrap();
    let out = dgq(&[
        "eval",
        "--model",
        dir.path().join("nope.gguf").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let line = one_error_line(&out);
    assert!(line.contains("nope.gguf"), "{line}");
}

#[test]
fn bad_method_and_missing_packed_file_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("text.txt");
    std::fs::write(&data, "hello world").unwrap();
    let out = dgq(&[
        "quantize",
        "--model",
        "m.gguf",
        "--method",
        "magic",
        "--calib",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(one_error_line(&out).contains("magic"));
    assert!(!dir.path().join("o").exists());
    let out = dgq(&["inspect", dir.path().join("missing.dgq").to_str().unwrap()]);
    one_error_line(&out);
    // A file that is not a packed model.
    let out = dgq(&["inspect", data.to_str().unwrap()]);
    one_error_line(&out);
}

#[test]
fn help_lists_the_subcommands() {
    let out = dgq(&["--help"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for c in ["quantize", "eval", "inspect"] {
        assert!(s.contains(c), "{s}");
    }
    for c in ["quantize", "eval", "inspect"] {
        assert!(dgq(&[c, "--help"]).status.success());
    }
}

/// A deterministic stand-in for random weights (SplitMix64 mapped to [-scale, scale)).
fn weights(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A safetensors file of f32 tensors (8-byte header length, JSON header, data), written by hand
/// so that the test needs no writer library.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, v) in tensors {
        let start = data.len();
        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
    bytes.extend(head);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

const WORDS: [&str; 15] = [
    "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it", "was", "red", "big",
    ".",
];

/// A tiny random LLaMA as a Hugging Face folder: d = 64 (K of q/k/v/o/gate/up), intermediate 192
/// (K of down), one layer, a word-level tokenizer over [`WORDS`]. Returns the folder and a text.
fn tiny_model(root: &Path) -> (PathBuf, PathBuf) {
    let (d, ff, vocab) = (64usize, 192usize, WORDS.len() + 1);
    let dir = root.join("tiny-llama");
    std::fs::create_dir(&dir).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 64, "hidden_act": "silu",
        "tie_word_embeddings": true, "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut t = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![vocab, d],
        weights(1, vocab * d, 1.0),
    )];
    let p = "model.layers.0.";
    for (i, (name, n, k)) in [
        ("self_attn.q_proj", d, d),
        ("self_attn.k_proj", d / 2, d),
        ("self_attn.v_proj", d / 2, d),
        ("self_attn.o_proj", d, d),
        ("mlp.gate_proj", ff, d),
        ("mlp.up_proj", ff, d),
        ("mlp.down_proj", d, ff),
    ]
    .into_iter()
    .enumerate()
    {
        t.push((
            format!("{p}{name}.weight"),
            vec![n, k],
            weights(10 + i as u64, n * k, 0.2),
        ));
    }
    for name in [
        format!("{p}input_layernorm.weight"),
        format!("{p}post_attention_layernorm.weight"),
        "model.norm.weight".to_string(),
    ] {
        t.push((name, vec![d], vec![1.0; d]));
    }
    write_safetensors(&dir.join("model.safetensors"), &t);
    let mut vocab_map = serde_json::Map::new();
    vocab_map.insert("<unk>".into(), 0.into());
    for (i, w) in WORDS.iter().enumerate() {
        vocab_map.insert((*w).into(), (i + 1).into());
    }
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let text: Vec<&str> = (0..400)
        .map(|i| WORDS[(i * 7 + i / 3) % WORDS.len()])
        .collect();
    let text_path = root.join("text.txt");
    std::fs::write(&text_path, text.join(" ")).unwrap();
    (dir, text_path)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `dgq quantize --method rtn` on the tiny model with a small calibration set, plus `extra`.
fn quantize_tiny(model: &Path, text: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "quantize",
        "--model",
        s(model),
        "--method",
        "rtn",
        "--calib",
        s(text),
        "--out",
        s(out),
        "--windows",
        "2",
        "--ctx",
        "16",
        "--no-layer-errors",
    ];
    args.extend_from_slice(extra);
    dgq(&args)
}

#[test]
fn the_tiny_model_quantizes_evaluates_and_inspects() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    let out = dir.path().join("q.dgq.safetensors");
    let r = quantize_tiny(&model, &text, &out, &["--group-size", "32"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), s(&out));
    // g32 divides every K: no fallback note.
    assert!(!String::from_utf8_lossy(&r.stderr).contains("note:"));
    let r = dgq(&["inspect", s(&out), "--json"]);
    assert!(r.status.success());
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["metadata"]["dgq.group_sizes"], "g32×7");
    let r = dgq(&[
        "eval",
        "--model",
        s(&model),
        "--quantized",
        s(&out),
        "--data",
        s(&text),
        "--ctx",
        "16",
        "--windows",
        "2",
        "--json",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["windows"], 2);
}

#[test]
fn an_unsupported_group_size_is_an_error_naming_the_sizes_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    let out = dir.path().join("q.dgq.safetensors");
    for g in ["7", "6", "0", "48", "2048"] {
        let line = one_error_line(&quantize_tiny(&model, &text, &out, &["--group-size", g]));
        assert!(line.contains(&format!("--group-size {g}")), "{line}");
        assert!(line.contains("power of two from 16 to 1024"), "{line}");
        assert!(!out.exists());
    }
}

#[test]
fn a_group_size_that_does_not_divide_k_is_announced_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    let out = dir.path().join("q.dgq.safetensors");
    let r = quantize_tiny(&model, &text, &out, &["--group-size", "128"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = String::from_utf8_lossy(&r.stderr);
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 2, "{err}");
    assert!(
        notes[0].contains("K = 64: 6 linears") && notes[0].contains("group size 64"),
        "{err}"
    );
    assert!(
        notes[1].contains("K = 192: 1 linears") && notes[1].contains("group size 64"),
        "{err}"
    );
    // Printed before the run starts (the run's summary line comes after).
    let first_note = err.find("note:").unwrap();
    assert!(
        first_note < err.find("quantized 7 linears").unwrap(),
        "{err}"
    );
    let j: serde_json::Value =
        serde_json::from_slice(&dgq(&["inspect", s(&out), "--json"]).stdout).unwrap();
    assert_eq!(j["metadata"]["dgq.group_sizes"], "g64×7");
}

#[test]
fn output_paths_are_checked_before_the_work_and_the_error_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    let missing = dir.path().join("no-such-folder").join("q.dgq.safetensors");
    let t = std::time::Instant::now();
    let line = one_error_line(&quantize_tiny(&model, &text, &missing, &[]));
    assert!(
        line.contains("no-such-folder") && line.contains("does not exist"),
        "{line}"
    );
    // Nothing was loaded: the "loaded …" progress line would have broken `one_error_line`.
    assert!(t.elapsed().as_secs() < 30);
    let report = dir.path().join("nope").join("r.json");
    let out = dir.path().join("q.dgq.safetensors");
    let line = one_error_line(&quantize_tiny(
        &model,
        &text,
        &out,
        &["--report", s(&report)],
    ));
    assert!(line.contains("--report") && line.contains("nope"), "{line}");
    // An existing folder as the output.
    let line = one_error_line(&quantize_tiny(&model, &text, dir.path(), &[]));
    assert!(line.contains("is a directory"), "{line}");
    assert!(!out.exists());
}

#[test]
fn an_output_never_replaces_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    let weights_file = model.join("model.safetensors");
    let before = std::fs::read(&weights_file).unwrap();
    let text_before = std::fs::read(&text).unwrap();
    let out = dir.path().join("q.dgq.safetensors");
    let mut cases: Vec<(PathBuf, Vec<String>, &str)> = vec![
        (text.clone(), vec![], "--calib"),
        (weights_file.clone(), vec![], "--model"),
        (model.join("config.json"), vec![], "--model"),
        // The same file by another spelling.
        (dir.path().join("tiny-llama/../text.txt"), vec![], "--calib"),
        (
            out.clone(),
            vec!["--report".into(), s(&out).into()],
            "are the same file",
        ),
        (
            out.clone(),
            vec!["--report".into(), s(&text).into()],
            "--calib",
        ),
    ];
    #[cfg(unix)]
    {
        let sym = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&text, &sym).unwrap();
        cases.push((sym, vec![], "--calib"));
    }
    let hard = dir.path().join("hard.txt");
    std::fs::hard_link(&text, &hard).unwrap();
    cases.push((hard, vec![], "--calib"));
    for (o, extra, what) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let line = one_error_line(&quantize_tiny(&model, &text, o, &extra));
        assert!(line.contains(what), "{}: {line}", o.display());
        assert!(line.contains("same file"), "{line}");
    }
    assert_eq!(std::fs::read(&weights_file).unwrap(), before);
    assert_eq!(std::fs::read(&text).unwrap(), text_before);
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn written_files_get_the_umask_default_and_replaced_files_keep_their_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let want = mode(&plain);
    let out = dir.path().join("q.dgq.safetensors");
    let report = dir.path().join("r.json");
    let r = quantize_tiny(&model, &text, &out, &["--report", s(&report)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!((mode(&out), mode(&report)), (want, want));
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = quantize_tiny(&model, &text, &out, &["--report", s(&report)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!((mode(&out), mode(&report)), (0o444, 0o640));
}

#[test]
fn zero_windows_or_a_too_short_context_are_errors_for_eval_too() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    for (flag, v) in [("--windows", "0"), ("--ctx", "1"), ("--ctx", "0")] {
        let out = dgq(&["eval", "--model", s(&model), "--data", s(&text), flag, v]);
        let line = one_error_line(&out);
        assert!(line.contains(&format!("{flag} {v}")), "{line}");
        assert!(out.stdout.is_empty());
    }
    let out = dir.path().join("q.dgq.safetensors");
    let line = one_error_line(&dgq(&[
        "quantize",
        "--model",
        s(&model),
        "--calib",
        s(&text),
        "--out",
        s(&out),
        "--windows",
        "0",
    ]));
    assert!(line.contains("--windows 0"), "{line}");
    assert!(!out.exists());
}

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden_v1.dgq.safetensors")
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    // `true` exits at once; dgq starts a moment later and writes into a pipe nobody reads.
    for flags in ["", "--json"] {
        let script =
            format!(r#"( sleep 0.3; "$0" inspect {flags} "$1"; echo "status=$?" >&2 ) | true"#);
        let out = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_dgq"), s(&golden())])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim(), "status=0", "inspect {flags}: {err}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_stdout_is_one_clear_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dgq"))
        .args(["inspect", s(&golden())])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out);
    assert!(
        line.contains("standard output") && line.contains("No space left"),
        "{line}"
    );
}

#[test]
fn errors_are_said_once_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny_model(dir.path());
    // A folder that is not a model: its OS error once.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let line = one_error_line(&dgq(&["eval", "--model", s(&empty), "--data", s(&text)]));
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    // A directory where a file is needed.
    let line = one_error_line(&dgq(&["inspect", s(&model)]));
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    // A GGUF that candle rejects, with backtraces on: the message, not 30 frames.
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUX\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dgq"))
        .args(["eval", "--model", s(&bad), "--data", s(&text)])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("bad.gguf"), "{line}");
    assert!(
        !line.contains("candle_core::") && !line.contains("backtrace"),
        "{line}"
    );
    assert!(line.len() < 300, "{line}");
}
