//! A small checkpoint that declares huge sizes fails without allocating more than about its own
//! size: a counting global allocator measures the peak of every load below. One test in this
//! binary, so nothing else allocates meanwhile.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use dgq_model::{GgufFile, Model};
use safetensors::tensor::Dtype;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            CURRENT.fetch_sub(l.size(), Ordering::SeqCst);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated while `f` runs, above what was allocated before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - base)
}

fn dir_size(p: &Path) -> usize {
    if p.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len() as usize)
            .sum()
    } else {
        std::fs::metadata(p).unwrap().len() as usize
    }
}

/// Fixed costs of a load (buffered reader, maps, error text) on top of the file's size.
const SLACK: usize = 256 << 10;

fn assert_small_failure(what: &str, path: &Path) {
    let size = dir_size(path);
    let (r, peak) = peak_of(|| Model::load(path).map(|_| ()));
    assert!(r.is_err(), "{what}: loaded");
    assert!(
        peak <= size + SLACK,
        "{what}: {peak} bytes allocated for a {size}-byte checkpoint ({:?})",
        r
    );
}

#[test]
fn hostile_sizes_fail_within_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let t = TinyLlama::default();
    let w = t.tensors(3);

    // GGUF: a tensor table declaring a 4 GiB tensor, and metadata declaring huge sizes.
    let big = gguf_bytes(
        &[("general.architecture", GgufValue::Str("llama".into()))],
        &[GgufTensor {
            name: "token_embd.weight".into(),
            shape: vec![1 << 20, 1 << 10],
            ggml_type: GGML_F32,
            data: vec![0; 64],
        }],
    );
    let p = dir.path().join("big.gguf");
    std::fs::write(&p, &big).unwrap();
    let (r, peak) = peak_of(|| GgufFile::open(&p).map(|_| ()));
    assert!(r.is_err() && peak <= big.len() + SLACK, "{peak}");
    assert_small_failure("gguf huge tensor", &p);

    for (key, v) in [
        ("llama.attention.key_length", 1u64 << 36),
        ("llama.block_count", 1 << 40),
        ("llama.block_count", 1 << 12),
        ("llama.embedding_length", 1 << 20),
        ("llama.feed_forward_length", 1 << 30),
        ("llama.context_length", u64::MAX),
    ] {
        let (mut kv, tensors) = tiny_gguf_parts(&t, &w, false, false);
        kv.retain(|(k, _)| *k != key);
        kv.push((key, GgufValue::U64(v)));
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, gguf_bytes(&kv, &tensors)).unwrap();
        assert_small_failure(&format!("gguf {key} = {v}"), &p);
    }

    // HF directories: config values far beyond the tensors.
    let o = TinyOpt::default();
    for (field, v) in [
        ("head_dim", 1u64 << 36),
        ("num_hidden_layers", 1 << 40),
        ("num_hidden_layers", 1 << 12),
        ("vocab_size", 1 << 30),
        ("intermediate_size", 1 << 30),
    ] {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = t.config_json();
        cfg[field] = v.into();
        write_hf_dir(d.path(), &cfg, &w, 1, Dtype::F32);
        assert_small_failure(&format!("llama {field} = {v}"), d.path());
    }
    for (field, v) in [
        ("max_position_embeddings", u64::MAX),
        ("max_position_embeddings", 1 << 29),
        ("num_hidden_layers", 1 << 12),
        ("ffn_dim", 1 << 30),
    ] {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = o.config_json();
        cfg[field] = v.into();
        write_hf_dir(d.path(), &cfg, &o.tensors(3), 1, Dtype::F32);
        assert_small_failure(&format!("opt {field} = {v}"), d.path());
    }
}
