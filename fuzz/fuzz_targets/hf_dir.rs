//! The Hugging Face directory loader (config.json + safetensors, single or sharded) on arbitrary
//! bytes, split into files: records of `[file id: u8][length: u32 LE][bytes]`, the id choosing
//! one of `FILES` (mod its length); a record cut short keeps what is there. The model that loads
//! runs one token.
#![no_main]

use dgq_model::Model;
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rest = data;
    while let Some((&id, tail)) = rest.split_first() {
        let (len, tail) = match tail.split_first_chunk::<4>() {
            Some((len, tail)) => (u32::from_le_bytes(*len) as usize, tail),
            None => (tail.len(), &[][..]),
        };
        let (part, tail) = tail.split_at(len.min(tail.len()));
        let name = FILES[id as usize % FILES.len()];
        std::fs::write(dir.path().join(name), part).expect("write a part");
        rest = tail;
    }
    if let Ok(m) = Model::from_hf_dir(dir.path()) {
        let _ = m.forward(&[0]);
    }
});
