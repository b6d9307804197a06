//! Builds the CUDA kernels in this crate's `cuda/*.cu` with nvcc for sm_90a, links cudart
//! statically and generates the FFI with bindgen from `cuda/include/dgq_kernels.h`.
//!
//! nvcc is looked up in this order: `$DGQ_NVCC`, `$DGQ_CUDA_HOME/bin/nvcc`, the toolchain that
//! `scripts/setup-toolchain.sh` installs (`${DGQ_CACHE:-$HOME/.cache/dgq}/toolchain`), then
//! `nvcc` on `PATH`. Without the `cuda` feature, a build without nvcc (or libclang) still
//! succeeds, with a warning, and every call returns `Error::NotBuiltWithCuda`; `DGQ_NO_CUDA=1`
//! forces that stub build. With the `cuda` feature (what the `cuda` features of `dgq` and
//! `dgq-capi` ask for), failing to build the kernels is a build error that says why.
//!
//! nvcc is slow, so the compiled archive is cached under `${DGQ_CACHE:-$HOME/.cache/dgq}/nvcc-build/`
//! keyed by a hash of the sources, the flags and `nvcc --version`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const NVCC_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O3",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-Xptxas=-warn-spills",
    "--expt-relaxed-constexpr",
];

fn main() {
    println!("cargo:rustc-check-cfg=cfg(dgq_cuda_built)");
    for v in [
        "DGQ_NVCC",
        "DGQ_CUDA_HOME",
        "DGQ_CACHE",
        "DGQ_NO_CUDA",
        "LIBCLANG_PATH",
        "HOME",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let cuda_dir = manifest.join("cuda");
    println!("cargo:rerun-if-changed={}", cuda_dir.display());
    let required = env::var_os("CARGO_FEATURE_CUDA").is_some();

    if env::var("DGQ_NO_CUDA").is_ok_and(|v| !v.is_empty() && v != "0") {
        if required {
            fail("DGQ_NO_CUDA is set, but the `cuda` feature asks for the CUDA kernels: unset one of them");
        }
        warn("DGQ_NO_CUDA is set: building without CUDA kernels; every call returns Error::NotBuiltWithCuda");
        return;
    }
    let built = match find_nvcc() {
        None => Err(
            "nvcc not found (set DGQ_NVCC or DGQ_CUDA_HOME, or run scripts/setup-toolchain.sh and \
             source its env.sh)"
                .to_string(),
        ),
        Some(nvcc) => {
            let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
            build(&nvcc, &cuda_dir, &out)
        }
    };
    if let Err(e) = built {
        if required {
            fail(&format!(
                "the `cuda` feature needs the CUDA kernels, but {e}"
            ));
        }
        warn(&format!(
            "{e}; building without CUDA kernels: every call returns Error::NotBuiltWithCuda"
        ));
    }
}

/// Stops the build with `msg` (the `cuda` feature was asked for and cannot be honoured).
fn fail(msg: &str) -> ! {
    eprintln!("error: dgq-cuda: {msg}");
    println!("cargo:warning=dgq-cuda: {msg}");
    std::process::exit(1);
}

fn warn(msg: &str) {
    println!("cargo:warning=dgq-cuda: {msg}");
}

fn cache_root() -> Option<PathBuf> {
    if let Some(c) = env::var_os("DGQ_CACHE") {
        return Some(PathBuf::from(c));
    }
    env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dgq"))
}

fn find_nvcc() -> Option<PathBuf> {
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(p) = env::var_os("DGQ_NVCC") {
        let p = PathBuf::from(p);
        return runs(&p).then_some(p);
    }
    let mut candidates = Vec::new();
    if let Some(h) = env::var_os("DGQ_CUDA_HOME") {
        candidates.push(PathBuf::from(h).join("bin/nvcc"));
    }
    if let Some(c) = cache_root() {
        candidates.push(c.join("toolchain/cuda-wheels/nvidia/cu13/bin/nvcc"));
    }
    candidates.push(PathBuf::from("nvcc"));
    candidates.into_iter().find(|p| runs(p))
}

fn cuda_sources(cuda_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for dir in [cuda_dir.to_path_buf(), cuda_dir.join("include")] {
        let rd = fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in rd.flatten() {
            let p = entry.path();
            if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("cu" | "cuh" | "h")
            ) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// FNV-1a, 64 bit: stable across Rust versions (unlike `DefaultHasher`), enough for a cache key.
fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

fn build(nvcc: &Path, cuda_dir: &Path, out: &Path) -> Result<(), String> {
    let nvcc_abs = if nvcc.components().count() == 1 {
        which(nvcc).ok_or_else(|| format!("cannot resolve {} on PATH", nvcc.display()))?
    } else {
        nvcc.to_path_buf()
    };
    let cuda_home = nvcc_abs
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("cannot derive CUDA home from {}", nvcc_abs.display()))?
        .to_path_buf();
    let include = cuda_dir.join("include");
    let header = include.join("dgq_kernels.h");

    // FFI first: it is cheap and fails fast when libclang is missing.
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_function("dgq_.*")
        .allowlist_type("Dgq.*")
        .allowlist_var("DGQ_.*")
        .rustified_enum("Dgq.*")
        .derive_default(true)
        .layout_tests(true)
        .generate()
        .map_err(|e| {
            format!(
                "bindgen failed on {} (is libclang installed? {e})",
                header.display()
            )
        })?;
    bindings
        .write_to_file(out.join("bindings.rs"))
        .map_err(|e| format!("cannot write bindings: {e}"))?;

    let sources = cuda_sources(cuda_dir)?;
    let version = Command::new(&nvcc_abs)
        .arg("--version")
        .output()
        .map_err(|e| format!("nvcc --version: {e}"))?
        .stdout;
    let mut key = 0xcbf2_9ce4_8422_2325u64;
    fnv1a(&mut key, &version);
    for f in NVCC_FLAGS {
        fnv1a(&mut key, f.as_bytes());
    }
    for s in &sources {
        fnv1a(
            &mut key,
            s.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        fnv1a(
            &mut key,
            &fs::read(s).map_err(|e| format!("cannot read {}: {e}", s.display()))?,
        );
    }
    let lib_name = "dgq_kernels";
    let lib_file = format!("lib{lib_name}.a");
    let cached = cache_root().map(|c| c.join(format!("nvcc-build/{key:016x}")));

    let dst = out.join(&lib_file);
    match cached
        .as_ref()
        .map(|c| c.join(&lib_file))
        .filter(|p| p.is_file())
    {
        Some(hit) => {
            fs::copy(&hit, &dst)
                .map_err(|e| format!("cannot copy cached {}: {e}", hit.display()))?;
        }
        None => {
            compile_archive(&nvcc_abs, &include, &sources, out, &dst)?;
            if let Some(dir) = &cached {
                // Write then rename so concurrent builds never see a partial archive.
                if fs::create_dir_all(dir).is_ok() {
                    let tmp = dir.join(format!("{lib_file}.{}.tmp", std::process::id()));
                    if fs::copy(&dst, &tmp).is_ok() {
                        let _ = fs::rename(&tmp, dir.join(&lib_file));
                    }
                }
            }
        }
    }

    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static={lib_name}");
    for lib_dir in [
        cuda_home.join("lib64"),
        cuda_home.join("lib"),
        cuda_home.join("targets/x86_64-linux/lib"),
    ] {
        if lib_dir.join("libcudart_static.a").is_file() {
            println!("cargo:rustc-link-search=native={}", lib_dir.display());
            break;
        }
    }
    println!("cargo:rustc-link-lib=static=cudart_static");
    for l in ["stdc++", "dl", "rt", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
    println!("cargo:rustc-cfg=dgq_cuda_built");
    Ok(())
}

/// Compiles every `.cu` with nvcc (whole-program mode: no relocatable device code, so no
/// device-link step) and archives the objects with the archiver `cc` picks for the target.
/// nvcc is run directly because `cc`'s CUDA mode only looks for nvcc on PATH or in the $NVCC
/// of the process that started cargo, and adds -G under the workspace's `debug = 1`.
fn compile_archive(
    nvcc: &Path,
    include: &Path,
    sources: &[PathBuf],
    out: &Path,
    dst: &Path,
) -> Result<(), String> {
    let mut objects = Vec::new();
    for src in sources
        .iter()
        .filter(|s| s.extension().is_some_and(|e| e == "cu"))
    {
        let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("kernel");
        let obj = out.join(format!("{stem}.o"));
        let o = Command::new(nvcc)
            .args(NVCC_FLAGS)
            .arg("-Xcompiler=-fPIC")
            .arg("-I")
            .arg(include)
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            warn(&format!("nvcc: {line}"));
        }
        if !o.status.success() {
            return Err(format!("nvcc failed on {}", src.display()));
        }
        objects.push(obj);
    }
    let _ = fs::remove_file(dst);
    let mut ar = cc::Build::new()
        .cargo_metadata(false)
        .try_get_archiver()
        .map_err(|e| format!("no archiver: {e}"))?;
    let st = ar
        .arg("crs")
        .arg(dst)
        .args(&objects)
        .status()
        .map_err(|e| format!("cannot run ar: {e}"))?;
    if !st.success() {
        return Err("ar failed".into());
    }
    Ok(())
}

fn which(name: &Path) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
