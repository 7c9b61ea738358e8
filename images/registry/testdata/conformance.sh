#!/usr/bin/env bash
# Builds the OCI distribution-spec conformance suite (pinned below) once,
# into .build/tools of the repository (git-ignored), and runs the registry's
# conformance tests with it: the full push/pull/discovery/management suite
# for distribution-spec 1.1 and its development profile, and the read-only
# pull suite for the hub's own registry and for a Docker-style mirror.
#
#   images/registry/testdata/conformance.sh               build if needed, run
#   images/registry/testdata/conformance.sh --build-only  build, print the binary's path
#
# Environment: GO (default go), OUTPOST_TOOLS (default <repo>/.build/tools),
# OUTPOST_OCI_CONFORMANCE_OUT (a directory to keep each run's full output).
set -euo pipefail

VERSION=v0.0.0-20260831232431-97274622c111
MODULE=github.com/opencontainers/distribution-spec/conformance

GO=${GO:-go}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
TOOLS=${OUTPOST_TOOLS:-$ROOT/.build/tools}
BIN=$TOOLS/oci-conformance-$VERSION

if [[ ! -x $BIN ]]; then
	mkdir -p "$TOOLS"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	echo "building the OCI conformance suite $VERSION" >&2
	# Outside the repository's module: go install pkg@version resolves the
	# suite's own go.mod.
	(cd "$tmp" && GOFLAGS= GOBIN="$tmp" "$GO" install "$MODULE@$VERSION")
	mv "$tmp/conformance" "$BIN"
fi

if [[ ${1:-} == --build-only ]]; then
	echo "$BIN"
	exit 0
fi

cd "$ROOT"
OUTPOST_OCI_CONFORMANCE=$BIN exec "$GO" test -count=1 -run 'TestOCIConformance' -v ./images/registry/
