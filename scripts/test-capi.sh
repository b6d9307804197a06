#!/usr/bin/env bash
# The C ABI as a C or C++ user meets it: installs libdgq into a temporary prefix, builds the C
# example, the bad-input test and the C++ (CMake + pkg-config) example against the installed
# shared and static libraries with gcc/g++, runs them, runs the bad-input test and the C++
# example under valgrind (no errors, no definite or indirect leaks), and compiles the header on
# its own in strict C99 and C++17.
#
# Installs cmake, valgrind and pkg-config with apt-get when they are missing (needs root).
#
# Usage: scripts/test-capi.sh
# Env:   DGQ_CAPI_PROFILE  cargo profile of the library under test (default: dev, whose
#                          dependencies are optimized and already built by `cargo test`; the
#                          install script itself defaults to release)
#        KEEP_TMP          when set, the temporary folder is kept and printed
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

missing=()
for tool in cmake valgrind pkg-config gcc g++ make; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  pkgs=()
  for tool in "${missing[@]}"; do
    case "$tool" in
      g++) pkgs+=(g++) ;;
      *) pkgs+=("$tool") ;;
    esac
  done
  if [[ $(id -u) -ne 0 ]]; then
    echo "test-capi.sh: missing ${missing[*]}; install them (apt-get install ${pkgs[*]})" >&2
    exit 1
  fi
  echo "test-capi.sh: installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

tmp="$(mktemp -d)"
if [[ -n "${KEEP_TMP:-}" ]]; then
  echo "test-capi.sh: keeping $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi
prefix="$tmp/prefix"
DGQ_CAPI_PROFILE="${DGQ_CAPI_PROFILE:-dev}" bash scripts/install-capi.sh "$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

passed=0
run() {
  echo "+ $*"
  "$@"
  passed=$((passed + 1))
}
vg=(valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect)

# 1. The header alone, strict C99 and C++17.
printf '#include <dgq.h>\nint main(void) { return dgq_abi_version() == DGQ_ABI_VERSION ? 0 : 1; }\n' >"$tmp/header.c"
cp "$tmp/header.c" "$tmp/header.cpp"
# shellcheck disable=SC2046
run gcc -std=c99 -Wall -Wextra -pedantic -Werror $(pkg-config --cflags dgq) -c "$tmp/header.c" -o "$tmp/header_c.o"
# shellcheck disable=SC2046
run g++ -std=c++17 -Wall -Wextra -pedantic -Werror $(pkg-config --cflags dgq) -c "$tmp/header.cpp" -o "$tmp/header_cpp.o"

# 2. C programs against the shared and the static library. -ffp-contract=off: the examples
#    restate the library's f32 recipes and compare bit for bit, so no fused multiply-adds.
cflags=(-std=c99 -O2 -g -Wall -Wextra -pedantic -Werror -ffp-contract=off)
for prog in examples/c/quantize_gemm.c crates/dgq-capi/tests/c/bad_input.c; do
  name="$(basename "$prog" .c)"
  # shellcheck disable=SC2046
  run gcc "${cflags[@]}" "$prog" $(pkg-config --cflags --libs dgq) -lm -pthread \
    -Wl,-rpath,"$prefix/lib" -o "$tmp/${name}_shared"
  # shellcheck disable=SC2046
  run gcc "${cflags[@]}" "$prog" $(pkg-config --cflags --libs dgq-static) -lm -pthread \
    -o "$tmp/${name}_static"
  # (ldd output captured first: `ldd | grep -q` can fail on SIGPIPE under pipefail)
  deps_static="$(ldd "$tmp/${name}_static")"
  deps_shared="$(ldd "$tmp/${name}_shared")"
  if grep -q libdgq <<<"$deps_static"; then
    echo "test-capi.sh: ${name}_static links libdgq dynamically" >&2
    exit 1
  fi
  if ! grep -q "libdgq.so.[0-9]* => $prefix/lib/" <<<"$deps_shared"; then
    echo "test-capi.sh: ${name}_shared does not load the installed libdgq.so" >&2
    exit 1
  fi
done
mkdir -p "$tmp/scratch"
run "$tmp/quantize_gemm_shared" "$tmp/scratch/c-shared.dgq.safetensors"
run "$tmp/quantize_gemm_static" "$tmp/scratch/c-static.dgq.safetensors"
run "$tmp/bad_input_static" "$tmp/scratch"
run "${vg[@]}" "$tmp/bad_input_shared" "$tmp/scratch"

# 3. The C++ example through CMake + pkg-config, shared and static.
for mode in OFF ON; do
  run cmake -S examples/cpp -B "$tmp/cpp-$mode" -DDGQ_STATIC="$mode" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=g++ --log-level=WARNING
  run cmake --build "$tmp/cpp-$mode"
  run ctest --test-dir "$tmp/cpp-$mode" --output-on-failure
done
run "${vg[@]}" "$tmp/cpp-OFF/dgq_cpp_example" "$tmp/scratch/cpp-valgrind.dgq.safetensors"

cd "$root"
echo "test-capi.sh: $passed passed, 0 failed"
