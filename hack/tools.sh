#!/usr/bin/env bash
# Build the real test tools from Go modules, cached outside the repository and keyed by
# version, so only the first run is slow:
#   kube   kube-apiserver, kubectl, and the node: kubelet, kube-scheduler,
#          kube-controller-manager, kube-proxy (one wrapper module, one version)
#   etcd   etcd;  helm  helm;  dex  Dex (an IdP for the tests)
#   containerd  containerd v2 with ctr and the runc shim;  coredns  cluster DNS
#   debs   runc, the CNI plugins, buildah, mmdebstrap, iptables from Debian (apt-get)
#
#   hack/tools.sh            build whatever is missing, then print NAME=PATH lines
#   hack/tools.sh kube etcd  only those groups
#   hack/tools.sh --print    print NAME=PATH lines only (exit 1 if anything is missing)
#
# Why a wrapper module: k8s.io/kubernetes requires its ~30 staging modules at v0.0.0 and
# replaces them with ./staging/..., so `go install k8s.io/kubernetes/cmd/...@vX` refuses.
# A throwaway module that requires k8s.io/kubernetes and replaces each staging module with
# its published v0.Y.Z builds the same binaries.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# Dex's module path has no /v2, so its release tags are not Go versions: this is the
# pseudo-version of the v2.41.1 release commit (the newest release the module proxy serves).
DEX_VERSION="${DEX_VERSION:-v0.0.0-20240807174518-43956db7fd75}"
DEX_API_VERSION="${DEX_API_VERSION:-v2.2.0}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
# Debian packages the real node needs; installed with apt-get when a command is missing.
DEBS="runc containernetworking-plugins buildah mmdebstrap iptables conntrack uidmap shellcheck"

CACHE="${TOKEN_REFRESHER_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-refresher/tools}"
export GOFLAGS="${GOFLAGS:--trimpath}" CGO_ENABLED=0
mkdir -p "$CACHE"

say() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

path_of() { # name version -> cached binary path
  echo "$CACHE/$1-$2/$1"
}

print_paths() {
  local missing=0
  for spec in "kube-apiserver $KUBE_VERSION" "kubectl $KUBE_VERSION" "etcd $ETCD_VERSION" \
              "helm $HELM_VERSION" "dex $DEX_VERSION" "kubelet $KUBE_VERSION" \
              "kube-scheduler $KUBE_VERSION" "kube-controller-manager $KUBE_VERSION" \
              "kube-proxy $KUBE_VERSION" "containerd $CONTAINERD_VERSION" \
              "ctr $CONTAINERD_VERSION" "containerd-shim-runc-v2 $CONTAINERD_VERSION" \
              "coredns $COREDNS_VERSION"; do
    local name version p
    read -r name version <<< "$spec"
    p=$(path_of "$name" "$version")
    [ -x "$p" ] || missing=1
    printf '%s=%s\n' "$(echo "$name" | tr 'a-z-' 'A-Z_')" "$p"
  done
  return $missing
}

# go build with a heartbeat: a cold kube-apiserver build takes many minutes on 2 cores,
# so say every 30 s what is still being compiled and for how long.
go_build() { # label dir out pkg [ldflags]
  local label=$1 dir=$2 out=$3 pkg=$4 ldflags=${5:-}
  local start=$SECONDS
  say "building $label (cold: a few minutes on 2 cores; cached afterwards)"
  ( cd "$dir" && go build -mod=mod -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg" ) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if (( (SECONDS - start) % 30 < 5 )) && kill -0 "$pid" 2>/dev/null; then
      say "  still building $label: $((SECONDS - start)) s so far"
    fi
  done
  wait "$pid"
  mv "$out.tmp" "$out"
  say "built $label in $((SECONDS - start)) s -> $out"
}

wrapper_mod() { # dir module-path requirement... ; prints nothing
  local dir=$1; shift
  mkdir -p "$dir"
  { echo "module token-refresher.invalid/tools"; echo; echo "go 1.25"; echo;
    for r in "$@"; do echo "require $r"; done; } > "$dir/go.mod"
}

build_kube() {
  local api kctl; api=$(path_of kube-apiserver "$KUBE_VERSION"); kctl=$(path_of kubectl "$KUBE_VERSION")
  local have=1 b
  for b in kube-apiserver kubectl kubelet kube-scheduler kube-controller-manager kube-proxy; do
    [ -x "$(path_of "$b" "$KUBE_VERSION")" ] || have=0
  done
  [ "$have" = 1 ] && return 0
  local dir="$CACHE/src/kubernetes-$KUBE_VERSION"
  say "preparing wrapper module for k8s.io/kubernetes $KUBE_VERSION"
  local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local minor=${KUBE_VERSION#v1.}; local staging="v0.${minor}"
  wrapper_mod "$dir" "k8s.io/kubernetes $KUBE_VERSION"
  # Replace only the staging modules that k8s.io/kubernetes requires: a few listed in its
  # replace block (sample-cli-plugin) are never published.
  local m
  while read -r m; do
    if grep -qE "^\s+$m v0\.0\.0" "$gomod"; then echo "replace $m => $m $staging" >> "$dir/go.mod"; fi
  done < <(awk '/=> \.\/staging/ {print $1}' "$gomod")
  local major=1 min=${minor%%.*}
  local ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$min"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$(dirname "$api")" "$(dirname "$kctl")"
  [ -x "$api" ] || go_build "kube-apiserver $KUBE_VERSION" "$dir" "$api" k8s.io/kubernetes/cmd/kube-apiserver "$ld"
  [ -x "$kctl" ] || go_build "kubectl $KUBE_VERSION" "$dir" "$kctl" k8s.io/kubernetes/cmd/kubectl "$ld"
  # The node's binaries share most packages with the apiserver: warm, each is a link step.
  local b
  for b in kubelet kube-scheduler kube-controller-manager kube-proxy; do
    local out; out=$(path_of "$b" "$KUBE_VERSION")
    mkdir -p "$(dirname "$out")"
    [ -x "$out" ] || go_build "$b $KUBE_VERSION" "$dir" "$out" "k8s.io/kubernetes/cmd/$b" "$ld"
  done
}

build_etcd() {
  local out; out=$(path_of etcd "$ETCD_VERSION")
  [ -x "$out" ] && return 0
  local dir="$CACHE/src/etcd-$ETCD_VERSION"
  wrapper_mod "$dir" "go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  # etcd's server module replaces its sibling modules with relative paths, too.
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
    echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION" >> "$dir/go.mod"
  done
  mkdir -p "$(dirname "$out")"
  go_build "etcd $ETCD_VERSION" "$dir" "$out" go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=release"
}

build_helm() {
  local out; out=$(path_of helm "$HELM_VERSION")
  [ -x "$out" ] && return 0
  local dir="$CACHE/src/helm-$HELM_VERSION"
  wrapper_mod "$dir" "helm.sh/helm/v3 $HELM_VERSION"
  mkdir -p "$(dirname "$out")"
  # Without these, helm assumes Kubernetes v1.20 for `helm template` and lint, and our
  # chart's kubeVersion constraint (>=1.30) refuses to render (helm's Makefile sets them).
  local kminor=${KUBE_VERSION#v1.}; kminor=${kminor%%.*}
  local ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
  done
  go_build "helm $HELM_VERSION" "$dir" "$out" helm.sh/helm/v3/cmd/helm "$ld"
}

build_dex() {
  local out; out=$(path_of dex "$DEX_VERSION")
  [ -x "$out" ] && return 0
  local dir="$CACHE/src/dex-$DEX_VERSION"
  # Dex replaces its api/v2 module with ./api/v2, which the module zip leaves out; the
  # release's API matches the published api/v2 v2.2.0 (v2.1.0, which it requires, lacks
  # the connector RPCs its server implements).
  wrapper_mod "$dir" "github.com/dexidp/dex $DEX_VERSION" "github.com/dexidp/dex/api/v2 $DEX_API_VERSION"
  mkdir -p "$(dirname "$out")"
  # cmd/dex refers to its sqlite3 storage, which only exists with cgo (gcc is on the machine).
  CGO_ENABLED=1 go_build "dex $DEX_VERSION" "$dir" "$out" github.com/dexidp/dex/cmd/dex
}

build_containerd() {
  local have=1 b
  for b in containerd ctr containerd-shim-runc-v2; do
    [ -x "$(path_of "$b" "$CONTAINERD_VERSION")" ] || have=0
  done
  [ "$have" = 1 ] && return 0
  # containerd's go.mod has no replace directives, so a wrapper module that requires it
  # builds it as released. CGO_ENABLED=0 leaves btrfs out; the tags drop the snapshotters
  # a test node never uses. The shim is built like upstream's Makefile does (no_grpc).
  local dir="$CACHE/src/containerd-$CONTAINERD_VERSION" P=github.com/containerd/containerd/v2
  wrapper_mod "$dir" "$P $CONTAINERD_VERSION"
  local ld="-X $P/version.Version=$CONTAINERD_VERSION -X $P/version.Revision=release"
  ld+=" -X $P/version.Package=github.com/containerd/containerd"
  for b in containerd ctr containerd-shim-runc-v2; do
    local out; out=$(path_of "$b" "$CONTAINERD_VERSION")
    mkdir -p "$(dirname "$out")"
    local tags="urfave_cli_no_docs no_btrfs no_devmapper no_zfs"
    [ "$b" = containerd-shim-runc-v2 ] && tags="urfave_cli_no_docs no_grpc"
    [ -x "$out" ] || GOFLAGS="$GOFLAGS -tags=${tags// /,}" \
      go_build "$b $CONTAINERD_VERSION" "$dir" "$out" "$P/cmd/$b" "$ld"
  done
}

build_coredns() {
  local out; out=$(path_of coredns "$COREDNS_VERSION")
  [ -x "$out" ] && return 0
  local dir="$CACHE/src/coredns-$COREDNS_VERSION"
  wrapper_mod "$dir" "github.com/coredns/coredns $COREDNS_VERSION"
  mkdir -p "$(dirname "$out")"
  go_build "coredns $COREDNS_VERSION" "$dir" "$out" github.com/coredns/coredns \
    "-X github.com/coredns/coredns/coremain.GitCommit=release"
}

build_debs() {
  local missing=0 c
  for c in runc buildah mmdebstrap iptables conntrack shellcheck /usr/lib/cni/bridge; do
    command -v "$c" > /dev/null 2>&1 || [ -x "$c" ] || missing=1
  done
  [ "$missing" = 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages ($DEBS): run as root, or: sudo apt-get install $DEBS"
    return 1
  fi
  say "installing Debian packages: $DEBS"
  apt-get update -qq
  # shellcheck disable=SC2086  # a word list on purpose
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEBS > /dev/null
  say "installed $DEBS"
}

if [ "${1:-}" = "--print" ]; then print_paths; exit $?; fi

if [ $# -gt 0 ]; then groups=("$@"); else groups=(debs kube etcd helm dex containerd coredns); fi
for t in "${groups[@]}"; do "build_$t"; done
# With named groups only those were built: the others may be missing, and that is fine.
print_paths || [ $# -gt 0 ]
