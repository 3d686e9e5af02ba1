#!/usr/bin/env bash
# Build the project's container images on a machine with no Docker engine and no registry,
# and export each as an OCI archive that `ctr -n k8s.io images import --local ARCHIVE` loads:
#   pause     the Kubernetes pause container, from the pause.c that the k8s.io/kubernetes
#             module ships (gcc -static, FROM scratch, user 65535)
#   sidecar   the project Dockerfile's `sidecar` target, unchanged
#   operator  the project Dockerfile's `operator` target, unchanged
# Both Dockerfile targets build on a local base image that stands in for the official
# python:3.11-slim-bookworm: Debian's python3 from this machine's own apt sources, with
# pip/setuptools/wheel from PyPI in /usr/local (mmdebstrap, then imported into buildah).
#
#   hack/images.sh          build what is missing or stale, then print NAME REF ARCHIVE lines
#   hack/images.sh --print  print those lines only (exit 1 if any archive is missing)
#
# stdout carries only the NAME REF ARCHIVE lines (NAME is pause, sidecar or operator);
# progress goes to stderr. Everything is cached under
# ${TOKEN_REFRESHER_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-refresher}/images,
# keyed by a hash of its inputs, so a warm run takes seconds.
#
# Images live in buildah's default storage (/var/lib/containers/storage as root), so
# `buildah images` shows them and the tests can `buildah from` them without extra flags.
# Run as root (mmdebstrap's chroot hooks and the default storage need it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
CACHE="${TOKEN_REFRESHER_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-refresher}/images"
REPO_PREFIX=localhost/token-refresher
PAUSE_REF=$REPO_PREFIX/pause:3.10
# shellcheck source=/dev/null
DEBIAN_RELEASE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
ARCH=$(dpkg --print-architecture)
# What the base image gets from PyPI (sha256 of each wheel as PyPI serves it). wheel 0.45.1
# is the last release without a `packaging` dependency, so the Dockerfile's
# `pip uninstall pip setuptools wheel` leaves nothing of them behind.
BASE_WHEELS="pip==26.3 --hash=sha256:f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13
setuptools==84.2.1 --hash=sha256:ca140b45d5325a9478f880e351484f62fef15f336462e449ca0c03c873d589c2
wheel==0.45.1 --hash=sha256:708e7481cc80179af0e556bbf0cc00b8444c7321e2700b8d8580231d13017248"

say() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
sha() { sha256sum | cut -c1-64; }

# Run "$@" with its stdout sent to stderr, saying what it does and how long it took.
step() { # label command...
  local label=$1 start=$SECONDS; shift
  say "$label ..."
  "$@" >&2
  say "$label: done in $((SECONDS - start)) s"
}

# The same for a chatty command: its output goes to a log file, whose tail is shown if it fails.
step_logged() { # label log command...
  local label=$1 log=$2 start=$SECONDS; shift 2
  say "$label (log: $log) ..."
  if ! "$@" > "$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "$label failed after $((SECONDS - start)) s; the whole log: $log"
  fi
  say "$label: done in $((SECONDS - start)) s"
}

# Working containers this run created; removed on exit even when a step fails, so no
# buildah container (and none of its mounts) is left behind.
CONTAINERS=()
TMPDIRS=()
cleanup() {
  local c d
  for c in "${CONTAINERS[@]}"; do buildah rm "$c" > /dev/null 2>&1 || true; done
  for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
new_tmpdir() { # -> TMP: a fresh directory under the cache (same filesystem as the archives)
  TMP=$(mktemp -d "$CACHE/tmp.XXXXXX"); TMPDIRS+=("$TMP")
}
have_image() { buildah inspect --type image "$1" > /dev/null 2>&1; }

# Export an image as an OCI archive (gzip layers), atomically. (buildah 1.28 ignores
# --disable-compression for this transport, so there is no faster uncompressed variant.)
export_archive() { # ref archive
  local tmp="$2.tmp"
  rm -f "$tmp"
  buildah push --quiet "$1" "oci-archive:$tmp:$1"
  mv "$tmp" "$2"
}

# ---------------------------------------------------------------------------------------
# Base image. Its key hashes these recipe functions, the wheel pins and the Debian release.

# This machine's own apt sources for the release (deb822 or one-line, as apt parses them),
# as one-line entries: the release itself, -updates and -security. No mirror host is
# written down here.
base_apt_sources() {
  # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
  apt-get indextargets --format '$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)' \
      'Identifier: Packages' |
    awk -v r="$DEBIAN_RELEASE" '
      $1 == "deb" && ($3 == r || $3 == r "-updates" || $3 == r "-security") {
        key = $2 " " $3
        if (!(key in comps)) { order[n++] = key; comps[key] = "" }
        if (index(" " comps[key] " ", " " $4 " ") == 0) comps[key] = comps[key] " " $4
      }
      END { for (i = 0; i < n; i++) print "deb " order[i] comps[order[i]] }'
}

# pip, setuptools and wheel from PyPI, downloaded by the host's pip (which knows this
# machine's proxy and CA settings), hash-checked.
base_wheels() { # dir
  local pip=(python3 -m pip)
  "${pip[@]}" --version > /dev/null 2>&1 || pip=("$ROOT/.venv/bin/python" -m pip)
  printf '%s\n' "$BASE_WHEELS" > "$1/requirements.txt"
  "${pip[@]}" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes --dest "$1" -r "$1/requirements.txt"
  rm "$1/requirements.txt"
}

# A minimal Debian rootfs with python3 (+ python-is-python3, ca-certificates), shaped like
# the official python slim image: pip/setuptools/wheel installed into /usr/local, no
# EXTERNALLY-MANAGED marker, no man pages, docs (but copyrights) or locales. The
# merged-usr hook keeps usrmerge (and with it perl) out. Chroot commands run under
# `env -i`: hooks inherit the host's environment, and host PIP_* settings (PIP_FIND_LINKS)
# would leak into the chroot's pip. Downloaded .debs are kept in the cache across runs.
base_rootfs() { # wheels-dir debs-dir out.tar
  local wheels=$1 debs=$2 out=$3 sources
  mapfile -t sources < <(base_apt_sources)
  [ "${#sources[@]}" -gt 0 ] ||
    die "no apt source for $DEBIAN_RELEASE in this machine's apt configuration (/etc/apt/sources.list*)"
  say "apt sources (from this machine): $(printf '%s; ' "${sources[@]}")"
  local chroot_env='env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root'
  # shellcheck disable=SC2016  # the hooks are shell snippets: mmdebstrap expands $1
  mmdebstrap --variant=essential --architectures="$ARCH" --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3,python-is-python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $debs /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $debs" \
    --customize-hook='mkdir -p "$1"/tmp/wheels' \
    --customize-hook="sync-in $wheels /tmp/wheels" \
    --customize-hook='chroot "$1" '"$chroot_env"' sh -c "set -- /tmp/wheels/pip-*.whl && python3 \"\$1/pip\" install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --root-user-action=ignore --break-system-packages /tmp/wheels/*.whl"' \
    --customize-hook='rm -rf "$1"/tmp/wheels "$1"/usr/lib/python3*/EXTERNALLY-MANAGED "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
    --customize-hook='chroot "$1" '"$chroot_env"' sh -c "python --version && pip --version"' \
    "$DEBIAN_RELEASE" "$out" "${sources[@]}"
}

base_import() { # rootfs.tar ref
  local c
  c=$(buildah from scratch); CONTAINERS+=("$c")
  buildah add --quiet "$c" "$1" / > /dev/null
  buildah config --os linux --arch "$ARCH" --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["python3"]' "$c"
  buildah commit --quiet --rm "$c" "$2" > /dev/null
}

base_key() {
  { declare -f base_apt_sources base_wheels base_rootfs base_import
    printf '%s\n' "$BASE_WHEELS" "$DEBIAN_RELEASE" "$ARCH"; } | sha
}

# The base image in buildah's storage: imported from the cached rootfs when buildah's
# storage lost it, built with mmdebstrap when there is no rootfs for this key.
ensure_base() { # key ref
  local key=$1 ref=$2 tar wheels
  have_image "$ref" && return 0
  tar="$CACHE/base-${key:0:12}.rootfs.tar"
  if [ ! -f "$tar" ]; then
    wheels="$CACHE/wheels-$(printf '%s\n' "$BASE_WHEELS" | sha | cut -c1-12)"
    if [ ! -d "$wheels" ]; then
      new_tmpdir
      step "downloading pip, setuptools, wheel from PyPI" base_wheels "$TMP"
      mv "$TMP" "$wheels"
    fi
    mkdir -p "$CACHE/debs"
    rm -rf "$tar.tmp"
    step_logged "building the base rootfs with mmdebstrap (Debian $DEBIAN_RELEASE + python3; ~1 min cold)" \
      "$CACHE/mmdebstrap.log" base_rootfs "$wheels" "$CACHE/debs" "$tar.tmp"
    mv "$tar.tmp" "$tar"
    rm_stale "$CACHE" 'base-*.rootfs.tar' "$(basename "$tar")"
    say "base rootfs: $(du -h "$tar" | cut -f1) ($tar)"
  fi
  step "importing the base rootfs into buildah as $ref" base_import "$tar" "$ref"
  rm_stale_tags "$REPO_PREFIX/python" "${ref##*:}"
}

# ---------------------------------------------------------------------------------------
# Pause image.

pause_build() { # workdir ref
  local dir=$1 ref=$2 gomod src tag c
  gomod=$(go env GOMODCACHE)
  src="$gomod/k8s.io/kubernetes@$KUBE_VERSION/build/pause/linux/pause.c"
  if [ ! -f "$src" ]; then
    say "downloading the k8s.io/kubernetes@$KUBE_VERSION module (it ships pause.c)"
    (cd "$dir" && go mod download k8s.io/kubernetes@"$KUBE_VERSION")
  fi
  [ -f "$src" ] || die "no $src after go mod download"
  # The version pause -v prints: upstream's TAG from the same directory's Makefile.
  tag=$(sed -n 's/^TAG ?= *//p' "$(dirname "$src")/../Makefile")
  gcc -Os -Wall -Werror -static -DVERSION="v${tag:-unknown}-token-refresher" -o "$dir/pause" "$src"
  strip "$dir/pause"
  c=$(buildah from scratch); CONTAINERS+=("$c")
  buildah copy --quiet "$c" "$dir/pause" /pause > /dev/null
  buildah config --os linux --arch "$ARCH" --entrypoint '["/pause"]' --user 65535:65535 "$c"
  buildah commit --quiet --rm "$c" "$ref" > /dev/null
}

pause_key() {
  { declare -f pause_build; printf '%s\n' "$KUBE_VERSION" "$ARCH"; } | sha
}

# ---------------------------------------------------------------------------------------
# The project Dockerfile's two targets.

# What the build context holds: exactly what .dockerignore lets through (an allow-list),
# from the working tree, so uncommitted edits are built too.
context_files() {
  local paths=(pyproject.toml README.md LICENSE Dockerfile .dockerignore sidecar operator)
  (
    cd "$ROOT"
    if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
      git ls-files --cached --others --exclude-standard -- "${paths[@]}"
    else
      find "${paths[@]}" -type f 2> /dev/null
    fi |
      grep -v -E '(^|/)__pycache__/|\.pyc$|\.egg-info(/|$)' | sort -u |
      while IFS= read -r f; do if [ -f "$f" ]; then printf '%s\n' "$f"; fi; done
  )
}

# The bind mount of the host's CA certificates is for build time only (RUN steps): this
# machine reaches PyPI through a TLS-intercepting proxy whose CA only the host trusts.
# Nothing of it ends up in an image.
app_build() { # base-ref target ref context-dir
  local mounts=()
  [ -d /etc/ssl/certs ] && mounts=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
  buildah bud --isolation chroot --pull=never --layers --force-rm --quiet \
    --build-arg PYTHON_IMAGE="$1" "${mounts[@]}" \
    --target "$2" -t "$3" -f "$4/Dockerfile" "$4" > /dev/null
}

# The build context is copied first and the key computed from the copy, so the images are
# always exactly what their key says, even when files change during a build.
make_context() { # dir
  local files
  mapfile -t files < <(context_files)
  [ "${#files[@]}" -gt 0 ] || die "no build context files found under $ROOT"
  (cd "$ROOT" && cp --parents -t "$1" -- "${files[@]}")
}

app_key() { # base-key context-dir
  { printf '%s\n' "$1"; declare -f context_files make_context app_build
    (cd "$2" && find . -type f -print0 | sort -z | xargs -0 sha256sum --); } | sha
}

# ---------------------------------------------------------------------------------------
# Housekeeping: one archive and one tag per image, the current ones.

rm_stale() { # dir glob keep-name
  local f
  for f in "$1"/$2; do
    [ -e "$f" ] && [ "$(basename "$f")" != "$3" ] && rm -f "$f"
  done
  return 0
}

rm_stale_tags() { # repo keep-tag
  local ref
  { buildah images --format '{{.Name}}:{{.Tag}}' 2> /dev/null | grep -F "$1:" || true; } |
    while IFS= read -r ref; do
      [ "${ref%%:*}" = "$1" ] && [ "${ref##*:}" != "$2" ] && buildah rmi "$ref" > /dev/null 2>&1
      true
    done
}

image_id() { buildah images --quiet --no-trunc "$1" 2> /dev/null || true; }
dangling() {
  { buildah images --quiet --no-trunc --filter dangling=true 2> /dev/null || true; } | sort -u
}

# `buildah bud --layers` keeps each stage's last layer as an untagged image: the operator
# build reuses the sidecar build's wheels that way. The next build with other inputs needs
# none of them, so the ones an earlier run of this script left (listed in a state file) go,
# and nothing else in a storage that other tools may share.
rm_old_intermediates() { # dangling-before-this-build
  local state="$CACHE/intermediates" now id
  now=$(dangling)
  if [ -f "$state" ]; then
    while IFS= read -r id; do
      if grep -qxF "$id" <<< "$now"; then buildah rmi "$id" > /dev/null 2>&1 || true; fi
    done < "$state"
  fi
  comm -13 <(printf '%s\n' "$1") <(printf '%s\n' "$now") > "$state"
}

# ---------------------------------------------------------------------------------------

BASE_KEY=$(base_key)
BASE_REF="$REPO_PREFIX/python:$DEBIAN_RELEASE-${BASE_KEY:0:12}"
PAUSE_KEY=$(pause_key)
PAUSE_ARCHIVE="$CACHE/pause-${PAUSE_KEY:0:12}.oci.tar"
mkdir -p "$CACHE"
new_tmpdir
CTX=$TMP
make_context "$CTX"
APP_KEY=$(app_key "$BASE_KEY" "$CTX")
SIDECAR_REF="$REPO_PREFIX/token-refresher:dev-${APP_KEY:0:12}"
OPERATOR_REF="$REPO_PREFIX/token-refresher-operator:dev-${APP_KEY:0:12}"
SIDECAR_ARCHIVE="$CACHE/sidecar-${APP_KEY:0:12}.oci.tar"
OPERATOR_ARCHIVE="$CACHE/operator-${APP_KEY:0:12}.oci.tar"

print_lines() {
  local missing=0 a
  for a in "$PAUSE_ARCHIVE" "$SIDECAR_ARCHIVE" "$OPERATOR_ARCHIVE"; do
    [ -f "$a" ] || missing=1
  done
  printf '%s %s %s\n' pause "$PAUSE_REF" "$PAUSE_ARCHIVE" \
    sidecar "$SIDECAR_REF" "$SIDECAR_ARCHIVE" operator "$OPERATOR_REF" "$OPERATOR_ARCHIVE"
  return "$missing"
}

case "${1:-}" in
  --print) print_lines; exit $? ;;
  "") ;;
  *) die "usage: hack/images.sh [--print]" ;;
esac

[ -n "$DEBIAN_RELEASE" ] || die "no VERSION_CODENAME in /etc/os-release: this script builds on Debian"
start=$SECONDS
# One build at a time (the node and the tests may both ask for images).
exec 9> "$CACHE/.lock"
flock 9

# buildah, mmdebstrap and runc come from Debian. hack/tools.sh prints every tool's
# NAME=PATH line and fails while unrelated tools are unbuilt, so only what is needed
# here is checked afterwards.
"$ROOT/hack/tools.sh" debs > /dev/null || true
for cmd in buildah mmdebstrap go; do
  command -v "$cmd" > /dev/null || die "$cmd is missing (hack/tools.sh debs installs buildah and mmdebstrap; go is needed for pause.c)"
done
if ! printf 'int main(void) { return 0; }\n' | gcc -static -x c -o /dev/null - > /dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "gcc and libc6-dev are needed for the pause image: sudo apt-get install gcc libc6-dev"
  say "installing gcc and libc6-dev (for the static pause binary)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev > /dev/null
fi

if [ ! -f "$PAUSE_ARCHIVE" ]; then
  old=$(image_id "$PAUSE_REF")
  new_tmpdir
  step "building the pause image from k8s.io/kubernetes@$KUBE_VERSION's pause.c" \
    pause_build "$TMP" "$PAUSE_REF"
  step "exporting $PAUSE_REF" export_archive "$PAUSE_REF" "$PAUSE_ARCHIVE"
  rm_stale "$CACHE" 'pause-*.oci.tar' "$(basename "$PAUSE_ARCHIVE")"
  # The tag moved to the new image: the old one is ours and unreferenced.
  if [ -n "$old" ] && [ "$old" != "$(image_id "$PAUSE_REF")" ]; then
    buildah rmi "$old" > /dev/null 2>&1 || true
  fi
fi

if [ ! -f "$SIDECAR_ARCHIVE" ] || [ ! -f "$OPERATOR_ARCHIVE" ]; then
  ensure_base "$BASE_KEY" "$BASE_REF"
  before=$(dangling)
  say "build context: $(find "$CTX" -type f | wc -l) files ($(du -sh "$CTX" | cut -f1))"
  step "building the sidecar image (Dockerfile target sidecar)" \
    app_build "$BASE_REF" sidecar "$SIDECAR_REF" "$CTX"
  step "building the operator image (Dockerfile target operator)" \
    app_build "$BASE_REF" operator "$OPERATOR_REF" "$CTX"
  step "exporting $SIDECAR_REF" export_archive "$SIDECAR_REF" "$SIDECAR_ARCHIVE"
  step "exporting $OPERATOR_REF" export_archive "$OPERATOR_REF" "$OPERATOR_ARCHIVE"
  rm_stale "$CACHE" 'sidecar-*.oci.tar' "$(basename "$SIDECAR_ARCHIVE")"
  rm_stale "$CACHE" 'operator-*.oci.tar' "$(basename "$OPERATOR_ARCHIVE")"
  remove_previous() {
    rm_stale_tags "$REPO_PREFIX/token-refresher" "${SIDECAR_REF##*:}"
    rm_stale_tags "$REPO_PREFIX/token-refresher-operator" "${OPERATOR_REF##*:}"
    rm_old_intermediates "$before"
  }
  step "removing the previous build's images from buildah's storage" remove_previous
fi

say "images ready in $((SECONDS - start)) s"
print_lines
