//! The GGUF loader on arbitrary bytes (written to a temporary file, as the loader takes paths):
//! open, read every tensor, build the tokenizer and the model, and run one token through it.
#![no_main]

use dgq_model::{GgufFile, Model, Tokenizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, data).expect("write the input");
    if let Ok(mut f) = GgufFile::open(&path) {
        for name in f.tensor_names() {
            let _ = f.read_tensor(&name);
        }
        let _ = Tokenizer::from_gguf_file(&f);
    }
    if let Ok(m) = Model::from_gguf(&path) {
        let _ = m.forward(&[0]);
    }
});
