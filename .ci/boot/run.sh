#!/usr/bin/env bash
# Boots the .deb under a real systemd: installs it into a Debian 12 root booted with
# systemd-nspawn and runs .ci/boot/inside.sh there (as a oneshot unit that writes its
# findings to a file and powers the container off). Prints a table of the results;
# exits non-zero when any check failed or the container did not finish.
#
#   bash .ci/boot/run.sh V1.deb V2.deb
#
# V2 is a rebuild of V1 (a higher revision) for the upgrade check. The debootstrapped
# root is cached in $FIELDGATE_BOOT_CACHE (default /var/cache/fieldgate-ci) and built
# when missing; each run boots a fresh copy of it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { echo "usage: $0 V1.deb V2.deb" >&2; exit 2; }
v1=$(realpath "$1")
v2=$(realpath "$2")
say() { printf '\n== boot: %s\n' "$*"; }

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
if ((${#missing[@]})); then
	say "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- the cached Debian 12 root ------------------------------------------------
suite=bookworm
include=systemd,systemd-sysv,dbus,passwd,procps,jq
cache=${FIELDGATE_BOOT_CACHE:-/var/cache/fieldgate-ci}
base="$cache/$suite-$(printf '%s' "$include" | sha256sum | cut -c1-12)"
if [ ! -f "$base/.complete" ]; then
	say "debootstrap $suite into $base (cached for later runs)"
	rm -rf "$base.tmp"
	mkdir -p "$cache"
	mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	debootstrap --variant=minbase --include="$include" "$suite" "$base.tmp" "${mirror:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$cache/debootstrap.log"; exit 1; }
	rm -rf "$base"
	mv "$base.tmp" "$base"
	touch "$base/.complete"
fi

work=$(mktemp -d /tmp/fieldgate-boot.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/root"
say "fresh copy of the root"
cp -a "$base" "$root"

mkdir -p "$root/root/debs/v1" "$root/root/debs/v2"
cp "$v1" "$root/root/debs/v1/"
cp "$v2" "$root/root/debs/v2/"
install -m 0755 .ci/boot/inside.sh "$root/usr/local/sbin/fieldgate-boot-check"
cat >"$root/etc/systemd/system/fieldgate-boot-check.service" <<'UNIT'
[Unit]
Description=fieldgate boot check (installs the .deb and checks it)
After=basic.target dbus.service systemd-journald.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fieldgate-boot-check
TimeoutStartSec=15min
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/fieldgate-boot-check.service \
	"$root/etc/systemd/system/multi-user.target.wants/fieldgate-boot-check.service"
# No login prompt on a console nobody reads.
ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
echo fieldgate-ci >"$root/etc/hostname"
: >"$root/etc/machine-id"

say "systemd-nspawn -b (Debian 12, systemd $(chroot "$root" dpkg-query -W -f='${Version}' systemd))"
started=$SECONDS
status=0
timeout 900 systemd-nspawn --register=no --keep-unit --quiet --console=pipe \
	-D "$root" -b </dev/null >"$work/console.log" 2>&1 || status=$?
echo "container ran $((SECONDS - started)) s (exit $status)"

result="$root/root/boot-check.result"
if [ ! -s "$result" ] || ! grep -qx DONE "$result"; then
	echo "the boot check did not finish; console:"
	tail -n 60 "$work/console.log"
	[ -f "$root/root/boot-check.log" ] && tail -n 80 "$root/root/boot-check.log"
	exit 1
fi

say "results"
printf '%-22s %-5s %s\n' check result detail
grep -v '^DONE$' "$result" | while IFS='|' read -r name res detail; do
	printf '%-22s %-5s %s\n' "$name" "$res" "$detail"
done
if grep -q '|FAIL|' "$result"; then
	echo
	echo "log of the failed run (inside the container):"
	tail -n 120 "$root/root/boot-check.log"
	echo "journal of fieldgate.service:"
	journalctl --directory="$root/var/log/journal" -u fieldgate.service --no-pager 2>/dev/null | tail -n 60 || true
	exit 1
fi
echo "all boot checks passed"
