#!/usr/bin/env bash
# build-image.sh builds a local PostgreSQL image from Debian packages, for hosts
# that cannot pull the official one: debootstrap a minimal rootfs of the host's
# Debian release that includes `postgresql`, add docker-entrypoint.sh, and
# `docker import` it. The apt mirror (and proxy, if any) come from the host's
# apt configuration at run time.
#
# Usage: build-image.sh [--force] [IMAGE]
#   IMAGE    defaults to ${GATEHOUSE_POSTGRES_IMAGE:-gatehouse/postgres:local}
#   --force  rebuild even if IMAGE already exists
# Environment:
#   GATEHOUSE_DEBIAN_MIRROR  use this mirror instead of the one apt is configured with
#
# Progress goes to stderr, so callers can capture stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
force=false
image=""
for arg in "$@"; do
	case "$arg" in
	--force) force=true ;;
	-h | --help)
		sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
		exit 0
		;;
	-*)
		echo "build-image.sh: unknown flag $arg" >&2
		exit 2
		;;
	*) image="$arg" ;;
	esac
done
image="${image:-${GATEHOUSE_POSTGRES_IMAGE:-gatehouse/postgres:local}}"

log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
if ! $force && [[ -n $old_id ]]; then
	log "image $image already exists; nothing to do (use --force to rebuild)"
	exit 0
fi
[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
command -v docker >/dev/null || die "docker not found"

# shellcheck source=/dev/null
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[[ -n $suite ]] || die "no VERSION_CODENAME in /etc/os-release (not a Debian host?)"

# debian_mirror prints the URI of the host's apt source for $suite: deb822
# stanzas (*.sources) first, then one-line sources.list entries.
debian_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		# Stanzas are separated by blank lines; a stanza qualifies if it is
		# enabled, has Type deb and lists $suite itself (not -security etc.).
		awk -v suite="$suite" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && tolower(enabled) != "no" && uris != "") {
					split(uris, u, " "); print u[1]; found = 1; exit
				}
				types = suites = uris = enabled = ""
			}
			/^#/ { next }
			/^[ \t]*$/ { flush(); next }
			{
				line = $0; sub(/^[^:]*:[ \t]*/, "", line)
				key = tolower($0); sub(/:.*/, "", key)
				if (key == "types") types = line
				else if (key == "suites") suites = line
				else if (key == "uris") uris = line
				else if (key == "enabled") enabled = line
			}
			END { if (!found) flush() }
		' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		# deb [options] URI SUITE COMPONENTS...
		awk -v suite="$suite" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == suite) { print $i; exit }
			}
		' "$f"
	done
}

mirror="${GATEHOUSE_DEBIAN_MIRROR:-}"
if [[ -z $mirror ]]; then
	while read -r uri; do
		case "$uri" in
		http://* | https://* | file:/*)
			mirror="$uri"
			break
			;;
		esac
	done < <(debian_mirror)
fi
[[ -n $mirror ]] || die "found no http(s) apt source for $suite in /etc/apt; set GATEHOUSE_DEBIAN_MIRROR"

# debootstrap fetches with wget, which reads http_proxy: take apt's proxy if set.
if [[ -z ${http_proxy:-} ]] && command -v apt-config >/dev/null; then
	eval "$(apt-config shell apt_http_proxy Acquire::http::Proxy apt_https_proxy Acquire::https::Proxy)"
	if [[ -n ${apt_http_proxy:-} && ${apt_http_proxy} != DIRECT ]]; then export http_proxy="$apt_http_proxy"; fi
	if [[ -n ${apt_https_proxy:-} && ${apt_https_proxy} != DIRECT ]]; then export https_proxy="$apt_https_proxy"; fi
fi

if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
		{ apt-get update -qq >&2 && apt-get install -y -qq debootstrap >&2; } ||
		die "could not install debootstrap"
fi

start=$SECONDS
work="$(mktemp -d /tmp/gatehouse-postgres-image.XXXXXX)"
rootfs="$work/rootfs"
base="gatehouse-postgres-rootfs:${work##*.}" # temporary tag of the imported rootfs
cleanup() {
	docker rmi "$base" >/dev/null 2>&1 || true
	# debootstrap mounts proc/sys inside the target; never let rm walk into them.
	local m
	awk -v w="$work" 'index($2, w "/") == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT

log "building $image: debootstrap $suite from $mirror into $rootfs"
keyring=()
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
	keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
if ! debootstrap --variant=minbase --include=postgresql,ca-certificates \
	"${keyring[@]}" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
	tail -n 30 "$work/debootstrap.log" >&2
	[[ -r $rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
	die "debootstrap failed"
fi
log "debootstrap done after $((SECONDS - start))s"

majors=("$rootfs"/usr/lib/postgresql/*/bin/postgres)
[[ -x ${majors[0]} ]] || die "postgresql is not in the rootfs"
major="$(basename "$(dirname "$(dirname "${majors[0]}")")")"
log "PostgreSQL $major installed; trimming the rootfs"

# The package creates a "main" cluster we do not use: the entrypoint runs initdb.
rm -rf "$rootfs/var/lib/postgresql/$major" "$rootfs/etc/postgresql/$major"
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
	"$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/* \
	"$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
	"$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian \
	"$rootfs/etc/resolv.conf" "$rootfs/etc/hostname" "$rootfs/debootstrap" \
	"$rootfs/usr/share/i18n"
# JIT compilation is of no use to Gatehouse's short OLTP queries, and LLVM is
# ~150 MiB, half the image. Without llvmjit.so, PostgreSQL silently runs with
# JIT unavailable (see jit_provider); nothing else links these libraries.
rm -rf "$rootfs/usr/lib/postgresql/$major/lib/bitcode" \
	"$rootfs/usr/lib/postgresql/$major/lib/llvmjit.so" \
	"$rootfs/usr/lib/postgresql/$major/lib/llvmjit_types.bc" \
	"$rootfs"/usr/lib/*/libLLVM-*.so* "$rootfs"/usr/lib/*/libz3.so*
chroot "$rootfs" "/usr/lib/postgresql/$major/bin/postgres" --version >/dev/null ||
	die "postgres does not run in the trimmed rootfs"
install -d -m 0700 -o "$(chroot "$rootfs" id -u postgres)" -g "$(chroot "$rootfs" id -g postgres)" \
	"$rootfs/var/lib/postgresql/data"
install -d -m 0755 "$rootfs/docker-entrypoint-initdb.d"
install -m 0755 "$here/docker-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"

log "importing into docker as $image"
# docker import takes only some instructions as --change (Engine 20.10 refuses
# STOPSIGNAL and LABEL); a one-step build with the legacy builder, which uses
# the local base image without pulling, adds the rest. VOLUME is declared as
# in the official image: PGDATA lives outside the container's layers (faster
# than a fuse-overlayfs layer, and kept when compose re-creates the container).
tar --numeric-owner -C "$rootfs" -cf - . | docker import \
	--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
	--change 'CMD ["postgres"]' \
	--change "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
	--change 'ENV PGDATA=/var/lib/postgresql/data' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'EXPOSE 5432' \
	--message "PostgreSQL $major from Debian $suite, built by deploy/postgres/build-image.sh" \
	- "$base" >/dev/null
if ! DOCKER_BUILDKIT=0 docker build --quiet --tag "$image" - >/dev/null 2>"$work/build.log" <<-EOF; then
	FROM $base
	STOPSIGNAL SIGINT
	VOLUME /var/lib/postgresql/data
	LABEL org.opencontainers.image.title="gatehouse-postgres" org.opencontainers.image.version="$major"
EOF
	cat "$work/build.log" >&2
	die "docker build failed"
fi
# A rebuild leaves the previous image untagged: drop it unless something uses it.
if [[ -n $old_id && $old_id != "$(docker image inspect -f '{{.Id}}' "$image")" ]]; then
	docker rmi "$old_id" >/dev/null 2>&1 || true
fi
size="$(docker image inspect -f '{{.Size}}' "$image")"
log "built $image (PostgreSQL $major, $((size / 1024 / 1024)) MiB) in $((SECONDS - start))s"
