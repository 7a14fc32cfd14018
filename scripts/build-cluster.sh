#!/usr/bin/env bash
# Build the local test control plane from source through the Go module proxy (issue 9): etcd,
# kube-apiserver, kube-controller-manager, Argo's workflow-controller and argoexec.
#
# Each component is pinned by its own go.mod + go.sum under tests/cluster/go/<component>/ and built
# into ~/.cache/vcube-cluster/<component>-<hash of go.mod, go.sum and this script's build line>/bin
# (override the root with VCUBE_CLUSTER_CACHE). A directory that exists is complete (it is renamed
# into place only after a successful build), so a warm machine builds nothing.
#
# Usage: scripts/build-cluster.sh            build what is missing, print NAME=<bin dir> lines
#        scripts/build-cluster.sh --print    print the bin dirs without building (exit 1 if absent)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
godir="$here/tests/cluster/go"
cache="${VCUBE_CLUSTER_CACHE:-$HOME/.cache/vcube-cluster}"
export PATH="$PATH:/usr/local/go/bin"
# A go.mod that asks for a newer Go than the installed one would otherwise fetch a toolchain
# silently; say which one we use instead (see README, "Run vcube on a real local Argo").
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-mod=readonly -buildvcs=false"
ldflags='-s -w'

# component -> Go packages that have a main (all from modules pinned in that component's go.mod).
declare -A packages=(
  [etcd]="go.etcd.io/etcd/server/v3"
  [kube]="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager"
  [argo]="github.com/argoproj/argo-workflows/v4/cmd/workflow-controller github.com/argoproj/argo-workflows/v4/cmd/argoexec"
)
order=(etcd kube argo)

# The version stamps upstream's own builds set (`/version`, user agents, logs), from go.mod.
xflags() {
  local v
  case "$1" in
    kube)
      v="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$godir/kube/go.mod")"
      local minor="${v#v1.}"
      minor="${minor%%.*}"
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
          "$pkg" "$v" "$pkg" "$pkg" "$minor" "$pkg"
      done
      ;;
    argo)
      v="$(sed -n 's/^require github.com\/argoproj\/argo-workflows\/v4 \(v[0-9.]*\)$/\1/p' \
        "$godir/argo/go.mod")"
      printf -- '-X github.com/argoproj/argo-workflows/v4.version=%s ' "$v"
      ;;
  esac
}

# Argo's git tree has workflow/executor/osspecific/signal_linux.go as a symlink to
# signal_darwin.go; module zips drop symlinks, so the module the proxy serves lacks it and argoexec
# does not build for Linux ("undefined: Setpgid"). Go refuses build overlays inside the module
# cache, so argo is built from a copy of the downloaded module (in the cache dir, never in the
# repo) with the link put back, through a temporary go.mod that `replace`s the module by it.
# Prints the extra `go build` flags.
argo_source() {
  [[ "$1" == argo ]] || return 0
  local mod=github.com/argoproj/argo-workflows/v4 dir v src
  dir="$(cd "$godir/argo" && go mod download -json "$mod" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  v="$(basename "$dir")"
  src="$cache/src/$v"
  if [[ ! -d "$src" ]]; then
    rm -rf "$src.tmp"
    mkdir -p "$cache/src"
    cp -r "$dir" "$src.tmp"
    chmod -R u+w "$src.tmp"
    ln -sf signal_darwin.go "$src.tmp/workflow/executor/osspecific/signal_linux.go"
    mv "$src.tmp" "$src"
  fi
  cp "$godir/argo/go.mod" "$godir/argo/go.sum" "$2/"
  echo "replace $mod => $src" >>"$2/go.mod"
  echo "-modfile=$2/go.mod"
}

bindir() {
  local c="$1" h
  h="$(cat "$godir/$c/go.mod" "$godir/$c/go.sum" \
    <(echo "${packages[$c]} $ldflags $(xflags "$c") -trimpath argo-source:signal_linux.go") | sha256sum | cut -c1-16)"
  echo "$cache/$c-$h/bin"
}

if [[ "${1:-}" == "--print" ]]; then
  rc=0
  for c in "${order[@]}"; do
    d="$(bindir "$c")"
    echo "$c=$d"
    [[ -d "$d" ]] || rc=1
  done
  exit $rc
fi

command -v go >/dev/null || { echo "error: no Go toolchain (expected /usr/local/go/bin/go)" >&2; exit 1; }
mkdir -p "$cache/logs"
# One build at a time on this machine (several worktrees may ask at once): the second waits,
# then finds the first one's result.
exec 9>"$cache/build.lock"
if ! flock -n 9; then
  echo "waiting for another build-cluster.sh on this machine ..." >&2
  flock 9
fi
for c in "${order[@]}"; do
  d="$(bindir "$c")"
  if [[ -d "$d" ]]; then
    echo "$c=$d"
    continue
  fi
  tmp="$(dirname "$d").tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  log="$cache/logs/$c.log"
  echo "building $c ($(go version | cut -d' ' -f3); log: $log) ..." >&2
  start=$SECONDS
  # shellcheck disable=SC2086  # the package list and the modfile flag are meant to split
  if ! (cd "$godir/$c" && go build -trimpath -ldflags="$ldflags $(xflags "$c")" \
    $(argo_source "$c" "$tmp") -o "$tmp/bin/" ${packages[$c]}) >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "error: building $c failed (full log: $log)" >&2
    rm -rf "$tmp"
    exit 1
  fi
  # etcd's server module is its own main package: go names the binary after "server/v3".
  if [[ "$c" == etcd ]]; then
    for n in server v3; do [[ ! -f "$tmp/bin/$n" ]] || mv "$tmp/bin/$n" "$tmp/bin/etcd"; done
  fi
  rm -rf "$(dirname "$d")" "$tmp/go.mod" "$tmp/go.sum"
  mv "$tmp" "$(dirname "$d")"
  echo "built $c in $((SECONDS - start)) s" >&2
  echo "$c=$d"
done
