//! Writes the C header of dgq-capi (cbindgen over this crate's source) to the path given as the
//! only argument, or to standard output with no argument. Used by scripts/gen-header.sh and
//! scripts/check-header.sh; built only with the `header` feature.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dgq-capi-header: reading cbindgen.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bindings = match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dgq-capi-header: cbindgen failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args_os().nth(1) {
        Some(path) => {
            bindings.write_to_file(&path);
        }
        None => bindings.write(std::io::stdout()),
    }
    ExitCode::SUCCESS
}
