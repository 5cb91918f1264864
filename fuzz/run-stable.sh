#!/usr/bin/env bash
# Coverage-guided fuzzing on a stable toolchain: the same SanitizerCoverage instrumentation
# cargo-fuzz asks rustc for, without AddressSanitizer (which needs nightly). Safe Rust makes
# ASan matter little here (zt-core forbids unsafe code); panics and aborts are what we look for.
# Usage: fuzz/run-stable.sh TARGET SECONDS
set -euo pipefail
cd "$(dirname "$0")"
target=$1
seconds=${2:-300}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# With an explicit --target, RUSTFLAGS stay off build scripts and proc macros (as cargo-fuzz does).
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$triple" --bin "$target"
mkdir -p "corpus/$target" "artifacts/$target"
"$CARGO_TARGET_DIR/$triple/release/$target" -max_total_time="$seconds" -artifact_prefix="artifacts/$target/" \
  -print_final_stats=1 "corpus/$target"
