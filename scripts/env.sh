# Sourced by the scripts: where cargo builds (kept between runs so RocksDB's C++ is built once).
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ringkv-target}"
export RINGKV_BIN="$CARGO_TARGET_DIR/release"
