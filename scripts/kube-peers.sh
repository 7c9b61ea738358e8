#!/usr/bin/env bash
# Builds kube-apiserver and kubectl (pinned below) once, into
# .build/tools/kube-<version>/ of the repository (git-ignored), for the tests
# of clusters/ that run a real API server. etcd comes from Debian's
# etcd-server (scripts/test-deps.sh installs it).
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@VERSION` fails on the
# module's replace directives, so the build goes through a throwaway wrapper
# module that requires k8s.io/kubernetes and maps each of its staging modules
# to the published v0.x version. Cold: about 5 minutes and 2.4 GB of memory;
# when the stamp is present it does nothing.
#
#   scripts/kube-peers.sh    build if needed, print the directory
#
# Environment: GO (default go), OUTPOST_TOOLS (default <repo>/.build/tools).
set -euo pipefail

VERSION=v1.37.2
STAGING=v0.${VERSION#v1.}

GO=${GO:-go}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${OUTPOST_TOOLS:-$ROOT/.build/tools}
DIR=$TOOLS/kube-$VERSION

if [[ $(cat "$DIR/stamp" 2>/dev/null) != "$VERSION" ]]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	echo "building kube-apiserver and kubectl $VERSION (a few minutes, once)" >&2
	cd "$tmp"
	export GOFLAGS=-mod=mod GOWORK=off
	"$GO" mod init outpost.invalid/kubepeers >/dev/null 2>&1
	gomod=$("$GO" mod download -json "k8s.io/kubernetes@$VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
	{
		echo "require k8s.io/kubernetes $VERSION"
		echo "replace ("
		sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/.*#\t\1 => \1 '"$STAGING"'#p' "$gomod"
		echo ")"
	} >>go.mod
	printf 'package kubepeers\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' >tools.go
	"$GO" mod tidy >/dev/null 2>&1 || "$GO" mod tidy
	pkg=k8s.io/component-base/version
	minor=${VERSION#v1.}
	minor=${minor%%.*}
	ldflags="-s -w -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	mkdir -p "$tmp/bin"
	"$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	mkdir -p "$DIR"
	mv "$tmp/bin/kube-apiserver" "$tmp/bin/kubectl" "$DIR/"
	echo "$VERSION" >"$DIR/stamp"
fi

echo "$DIR"
