#!/usr/bin/env bash
# Build (or reuse) the otelcol-audit OpenTelemetry Collector distribution.
#
#   scripts/build-collector.sh [path/to/builder-config.yaml]
#
# The binary is cached OUTSIDE the repository, keyed by the sha256 of the manifest:
#   ${OTEL_AUDIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-audit}/otelcol-audit-<sha256>/otelcol-audit
# An unchanged manifest is never rebuilt. The last line on stdout is the binary's absolute path;
# everything else goes to stderr. Any failure exits non-zero with a message.
#
# Environment:
#   OTEL_AUDIT_CACHE        cache root (default ~/.cache/otel-audit)
#   OTEL_AUDIT_FORCE_BUILD  =1 to rebuild even when the cached binary exists
#   OTEL_AUDIT_BUILD_NICE   niceness for the build (default 10; the build is CPU heavy)
#   GOMODCACHE, GOCACHE     honoured; defaults are Go's own (shared with other Go work, so warm)
#   GOPROXY                 honoured (the build needs only the Go module proxy)
set -Eeuo pipefail

die() { echo "build-collector: ERROR: $*" >&2; exit 1; }
log() { echo "build-collector: $*" >&2; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
manifest=${1:-$repo_root/collector-config/builder-config.yaml}
[[ -f $manifest ]] || die "manifest not found: $manifest"
manifest=$(cd "$(dirname "$manifest")" && pwd)/$(basename "$manifest")

command -v go >/dev/null || die "go is not on PATH (the Go toolchain is required to build the collector)"
command -v sha256sum >/dev/null || die "sha256sum is required"

# The builder version is the version of the core components in the manifest (core and builder are
# released together), so the manifest is the single place where the release is pinned.
builder_version=$(sed -n 's#^ *- *gomod: *go\.opentelemetry\.io/collector/receiver/otlpreceiver \(v[0-9][^ ]*\).*#\1#p' "$manifest" | head -n1)
[[ -n $builder_version ]] || die "cannot find the otlpreceiver version (the release pin) in $manifest"

hash=$(sha256sum "$manifest" | cut -d' ' -f1)
cache_root=${OTEL_AUDIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-audit}
dist_name=$(sed -n 's/^ *name: *\([A-Za-z0-9._-]*\).*/\1/p' "$manifest" | head -n1)
[[ -n $dist_name ]] || die "cannot find dist.name in $manifest"
out_dir=$cache_root/$dist_name-$hash
binary=$out_dir/$dist_name

case "$repo_root/" in
  "$cache_root"/*|"$cache_root/") die "cache dir $cache_root must be outside the repository";;
esac
case "$cache_root/" in
  "$repo_root"/*) die "cache dir $cache_root must be outside the repository ($repo_root)";;
esac

mkdir -p "$cache_root"

if [[ ${OTEL_AUDIT_FORCE_BUILD:-0} != 1 && -x $binary ]]; then
  log "cached: $binary (manifest sha256 $hash)"
  echo "$binary"
  exit 0
fi

# One build per manifest at a time (parallel test sessions, CI jobs); the second waits and reuses.
exec 9>"$cache_root/.$dist_name-$hash.lock"
if ! flock -w 5400 9; then die "timed out waiting for another build of $dist_name-$hash"; fi
if [[ ${OTEL_AUDIT_FORCE_BUILD:-0} != 1 && -x $binary ]]; then
  log "built by a concurrent run: $binary"
  echo "$binary"
  exit 0
fi

export GOTOOLCHAIN=${GOTOOLCHAIN:-local}   # never download a toolchain behind the user's back
export CGO_ENABLED=0                       # static binary, no C toolchain needed
# -e lets the builder's `go mod tidy` tolerate modules that only TESTS of dependencies import and
# that the module proxy does not serve (e.g. contrib's otlpencodingextension@v0.148.0, a test-only
# import of fileexporter); `go build` ignores -e, so anything the binary really needs still fails.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false -mod=mod -e"
export GOWORK=off                          # ignore any go.work in parent directories
nice_level=${OTEL_AUDIT_BUILD_NICE:-10}

tools_dir=$cache_root/tools/builder-$builder_version
if [[ ! -x $tools_dir/builder ]]; then
  log "installing go.opentelemetry.io/collector/cmd/builder@$builder_version"
  mkdir -p "$tools_dir"
  GOBIN=$tools_dir nice -n "$nice_level" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2 \
    || die "go install of the collector builder $builder_version failed"
fi
"$tools_dir/builder" version >&2 || die "the installed builder does not run"

work=$(mktemp -d "$cache_root/.build-$hash.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
cp "$manifest" "$work/builder-config.yaml"

log "building $dist_name (manifest sha256 $hash) in $work; this takes minutes on a cold cache"
start=$(date +%s)
( cd "$work" && nice -n "$nice_level" "$tools_dir/builder" --config builder-config.yaml ) >"$work/build.log" 2>&1 || {
  tail -n 60 "$work/build.log" >&2
  die "the collector builder failed (full log above, last 60 lines)"
}
built=$work/_build/$dist_name
[[ -x $built ]] || { tail -n 30 "$work/build.log" >&2; die "the builder finished but $built does not exist"; }
"$built" --version >&2 || die "the built binary does not run"
"$built" components >"$work/components.yaml" 2>&1 || die "the built binary cannot list its components"

# Publish atomically: a half-written binary is never found in the cache.
stage=$cache_root/.stage-$hash.$$
rm -rf "$stage"
mkdir -p "$stage"
mv "$built" "$stage/$dist_name"
cp "$manifest" "$stage/builder-config.yaml"
cp "$work/components.yaml" "$stage/components.yaml"
echo "$(( $(date +%s) - start ))" >"$stage/build-seconds"
rm -rf "$out_dir"
mv "$stage" "$out_dir"
log "built in $(cat "$out_dir/build-seconds")s: $binary"
echo "$binary"
