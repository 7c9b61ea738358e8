#!/usr/bin/env bash
# Installs what the tests need beyond Go: iproute2, iptables and ping for the
# multi-host tests in network namespaces, Ansible for playbook steps, skopeo
# (a real OCI client), CNCF Distribution (docker-registry, an origin registry
# for the fetch tests) and the OCI conformance suite (built once into
# .build/tools) for the registry, and staticcheck; raises the UDP buffers
# quic-go asks for. Idempotent: it installs
# only what is missing. Needs root for the packages and the sysctl.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v ping >/dev/null || need+=(iputils-ping)
command -v ansible-playbook >/dev/null || need+=(ansible-core)
command -v skopeo >/dev/null || need+=(skopeo)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v containerd >/dev/null || need+=(containerd)
command -v etcd >/dev/null || need+=(etcd-server)
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion) # the completion tests run the
command -v fish >/dev/null || need+=(fish)                                      # bash and fish scripts
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]}; install them (as root: apt-get install ${need[*]}) or run make test as root" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "$(id -u)" = 0 ]; then
  sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000 >/dev/null 2>&1 ||
    echo "could not raise UDP buffers; QUIC runs slower" >&2
fi

images/registry/testdata/conformance.sh --build-only >/dev/null
scripts/kube-peers.sh >/dev/null
