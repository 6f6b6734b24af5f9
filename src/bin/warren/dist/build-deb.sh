#!/usr/bin/env bash
# Build warren's Debian package (target/debian/warren_VERSION-1_ARCH.deb):
# the release binary, then `cargo deb` with the files of this folder (the
# systemd unit, the default configuration, postinst and postrm; see
# [package.metadata.deb] in Cargo.toml). Installs cargo-deb when missing.
#
#   src/bin/warren/dist/build-deb.sh                 # build, then package
#   src/bin/warren/dist/build-deb.sh --no-build ...  # package the binary already
#                                                    # in $CARGO_TARGET_DIR/release
# Any other arguments go to `cargo deb` (e.g. --output FILE, --fast). The
# binary is stripped (the release profile keeps line tables for profiling).
set -euo pipefail
cd "$(dirname "$0")/../../../.."

build=1
if [ "${1:-}" = --no-build ]; then
    build=0
    shift
fi
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi
if [ "$build" = 1 ]; then
    cargo build --release --locked --bin warren
fi
target="${CARGO_TARGET_DIR:-target}"
"$target/release/warren" --version
cargo deb --no-build --strip "$@"
