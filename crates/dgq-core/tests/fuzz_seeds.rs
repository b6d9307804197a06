//! The seed corpus of the `format` and `capi_open` fuzz targets (fuzz/seeds/format): the golden
//! model, and each of its layers alone in a file of its own. The committed seeds must keep
//! loading (a seed the reader refuses only exercises the first checks).
//!
//! Regenerate: `cargo test -p dgq-core --test fuzz_seeds -- --ignored write_fuzz_seeds`

mod format_common;

use std::path::PathBuf;

use dgq_core::format::{self, PackedModel};
use format_common::*;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/format")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let golden = golden_model();
    let mut out = vec![("golden.dgq.safetensors".to_string(), golden_bytes())];
    for (name, layer) in &golden.layers {
        let mut m = PackedModel::new("dgq/seed", "one layer");
        m.layers.insert(name.clone(), layer.clone());
        let file = format!("{}.dgq.safetensors", name.replace('.', "_"));
        out.push((file, format::to_bytes(&m).unwrap()));
    }
    out.push((
        "empty.dgq.safetensors".into(),
        format::to_bytes(&PackedModel::new("", "")).unwrap(),
    ));
    out
}

#[test]
#[ignore = "writes fuzz/seeds/format"]
fn write_fuzz_seeds() {
    let dir = seed_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(&name), &bytes).unwrap();
        println!("{name}: {} bytes", bytes.len());
    }
}

#[test]
fn committed_seeds_load() {
    let mut n = 0;
    for e in std::fs::read_dir(seed_dir()).expect("fuzz/seeds/format is committed") {
        let p = e.unwrap().path();
        format::read(&p).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
        n += 1;
    }
    assert_eq!(n, seeds().len());
}
