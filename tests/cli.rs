//! The `dgq` binary's error path and help: failures are one `error: …` line and a non-zero exit.

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
