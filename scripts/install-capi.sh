#!/usr/bin/env bash
# Builds libdgq (crates/dgq-capi) and installs it under PREFIX:
#
#   PREFIX/lib/libdgq.so.<version>       the shared library (soname libdgq.so.<ABI>)
#   PREFIX/lib/libdgq.so.<ABI>           -> libdgq.so.<version>
#   PREFIX/lib/libdgq.so                 -> libdgq.so.<ABI>           (link-time name)
#   PREFIX/lib/libdgq.a                  the static library
#   PREFIX/include/dgq.h                 the header
#   PREFIX/lib/pkgconfig/dgq.pc          pkg-config: link the shared library   (-ldgq)
#   PREFIX/lib/pkgconfig/dgq-static.pc   pkg-config: link the static library   (libdgq.a + system libs)
#
# Cargo names the artifacts libdgq_capi.{so,a} (the `dgq` library name belongs to the root
# package); they are installed under the public name libdgq here.
#
# Usage: scripts/install-capi.sh PREFIX
# Env:   DGQ_CAPI_FEATURES  cargo features of dgq-capi to enable (e.g. "cuda"); default none
#        DGQ_CAPI_PROFILE   cargo profile to build (default: release)
#        CI                 when set, cargo runs with --locked
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"
profile="${DGQ_CAPI_PROFILE:-release}"
features="${DGQ_CAPI_FEATURES:-}"

locked=()
if [[ -n "${CI:-}" ]]; then
  locked=(--locked)
fi
feat=()
if [[ -n "$features" ]]; then
  feat=(--features "$features")
fi

# One build of all three crate types; `--print native-static-libs` reports the system libraries a
# program linking libdgq.a needs (cargo replays the note when the build is fresh).
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo rustc "${locked[@]}" --profile "$profile" -p dgq-capi --lib "${feat[@]}" \
  -- --print native-static-libs 2>&1 | tee "$log" >&2
native_libs="$(sed -n 's/^note: native-static-libs: //p' "$log" | tail -n 1)"
if [[ -z "$native_libs" ]]; then
  echo "install-capi.sh: cargo did not report native-static-libs" >&2
  exit 1
fi

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
dir_name="$profile"
if [[ "$profile" == "dev" ]]; then
  dir_name=debug
fi
out="$target_dir/$dir_name"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
abi="$(sed -n 's/^#define DGQ_ABI_VERSION \([0-9]*\)$/\1/p' include/dgq.h)"
if [[ -z "$version" || -z "$abi" ]]; then
  echo "install-capi.sh: could not read the version ($version) or DGQ_ABI_VERSION ($abi)" >&2
  exit 1
fi
soname="libdgq.so.$abi"
if command -v readelf >/dev/null; then
  built_soname="$(readelf -d "$out/libdgq_capi.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')"
  if [[ "$built_soname" != "$soname" ]]; then
    echo "install-capi.sh: built soname '$built_soname' != '$soname' from include/dgq.h" >&2
    exit 1
  fi
fi

install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$out/libdgq_capi.so" "$prefix/lib/libdgq.so.$version"
ln -sfn "libdgq.so.$version" "$prefix/lib/$soname"
ln -sfn "$soname" "$prefix/lib/libdgq.so"
install -m 0644 "$out/libdgq_capi.a" "$prefix/lib/libdgq.a"
install -m 0644 "$root/include/dgq.h" "$prefix/include/dgq.h"

cat >"$prefix/lib/pkgconfig/dgq.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: dgq
Description: W4A8 LLM quantization with Dual Grained Quantization (shared library)
Version: $version
Libs: -L\${libdir} -ldgq
Libs.private: $native_libs
Cflags: -I\${includedir}
PC

cat >"$prefix/lib/pkgconfig/dgq-static.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: dgq-static
Description: W4A8 LLM quantization with Dual Grained Quantization (static library)
Version: $version
Libs: \${libdir}/libdgq.a $native_libs
Cflags: -I\${includedir}
PC

echo "install-capi.sh: installed libdgq $version (ABI $abi, features: ${features:-none}) into $prefix"
