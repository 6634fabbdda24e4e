#!/usr/bin/env bash
# Packaging checks, called by .ci/run as `bash .ci/packaging.sh`.
#
# On a fresh Debian 12 machine as root: installs what it needs, then
#   1. systemd-analyze security --offline=yes on systemd/fieldgate.service: the overall
#      exposure must be <= 2.0 (the figure is printed);
#   2. builds the .deb with cargo-deb from a dev-profile build (no long release build);
#   3. checks its control fields, conffiles, maintainer scripts and contents;
#   4. installs it into a throwaway root with `dpkg --root` (maintainer scripts run
#      chrootless with DPKG_ROOT set, a policy-rc.d forbids starting services), then
#      runs systemd-analyze verify on the installed unit against the installed binary,
#      `fieldgate --version`, `fieldgate config check` and `fieldgate doctor` there;
#   5. upgrades it in that root (edited config, master key and state survive), removes
#      it (they still survive) and purges it (they are gone).
# Nothing outside its temp directory is changed besides the apt/cargo installs.
set -euo pipefail

cd "$(dirname "$0")/.."
MAX_EXPOSURE=2.0
CARGO_DEB_VERSION=3.8.0

say() { printf '\n== packaging: %s\n' "$*"; }
fail() {
	printf 'packaging: FAIL: %s\n' "$*" >&2
	exit 1
}

# --- tools -------------------------------------------------------------------
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v systemd-sysusers >/dev/null || missing+=(systemd)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v deb-systemd-helper >/dev/null || missing+=(init-system-helpers)
command -v strip >/dev/null || missing+=(binutils)
if ((${#missing[@]})); then
	say "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
	say "installing cargo-deb $CARGO_DEB_VERSION"
	cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
cargo deb --version

work=$(mktemp -d /tmp/fieldgate-packaging.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- 1. hardening score ------------------------------------------------------
say "systemd-analyze security --offline=yes systemd/fieldgate.service"
security_out=$(systemd-analyze security --offline=yes systemd/fieldgate.service 2>&1) ||
	fail "systemd-analyze security failed: $security_out"
printf '%s\n' "$security_out" | grep -v '^✓' | tail -n 20
exposure=$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for fieldgate.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "no overall exposure figure in the output"
echo "overall exposure: $exposure (must be <= $MAX_EXPOSURE)"
awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e <= max) }' ||
	fail "overall exposure $exposure > $MAX_EXPOSURE"

# --- 2. build the .deb -------------------------------------------------------
say "building the .deb (dev profile)"
version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || fail "no package version in Cargo.toml"
arch=$(dpkg --print-architecture)
cargo build --bin fieldgate
# --profile dev: the binary the tests already built; cargo-deb warns that dev is
# not meant for releases, which is fine for checking the packaging.
cargo deb --profile dev --no-build --no-dbgsym --strip --fast -q -o "$work/v1/" 2>&1 |
	grep -v -e 'dev profile is not supported' -e 'To enable debug symbols' || true
deb="$work/v1/fieldgate_${version}-1_${arch}.deb"
[ -f "$deb" ] || fail "expected $deb; got: $(ls "$work/v1" 2>&1)"
ls -l "$deb"

# --- 3. control fields and contents ------------------------------------------
say "dpkg-deb --info / --contents"
dpkg-deb --info "$deb"
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = fieldgate ] || fail "Package: $(field Package)"
[ "$(field Version)" = "${version}-1" ] || fail "Version: $(field Version)"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
[ "$(field Section)" = net ] || fail "Section: $(field Section)"
field Maintainer | grep -q '<.*@.*>' || fail "Maintainer: $(field Maintainer)"
field Depends | grep -q 'systemd (>= 247)' || fail "Depends lacks systemd (>= 247): $(field Depends)"
field Depends | grep -q 'libc6' || fail "Depends lacks libc6 (\$auto): $(field Depends)"

control="$work/control"
dpkg-deb --control "$deb" "$control"
grep -qx '/etc/fieldgate/fieldgate.toml' "$control/conffiles" || fail "the config is not a conffile"
grep -q 'systemd-sysusers.*fieldgate.conf' "$control/postinst" || fail "postinst does not run systemd-sysusers"
grep -q 'deb-systemd-helper enable fieldgate.service' "$control/postinst" || fail "postinst does not enable the unit"
grep -q 'deb-systemd-helper enable fieldgate.socket' "$control/postinst" || fail "postinst does not enable the socket unit"
grep -q '_dh_action=restart' "$control/postinst" || fail "postinst does not restart the unit on upgrade"
grep -q 'master.key' "$control/postinst" || fail "postinst does not create the master key"
grep -q 'deb-systemd-invoke stop' "$control/prerm" || fail "prerm does not stop the unit on removal"
if grep -q 'DEBHELPER' "$control/postinst" "$control/postrm"; then fail "#DEBHELPER# left unreplaced"; fi
for script in postinst prerm postrm; do sh -n "$control/$script" || fail "$script: syntax error"; done

contents=$(dpkg-deb --contents "$deb")
printf '%s\n' "$contents"
for want in \
	'-rwxr-xr-x .* ./usr/bin/fieldgate$' \
	'-rw-r--r-- .* ./usr/lib/systemd/system/fieldgate.service$' \
	'-rw-r--r-- .* ./usr/lib/systemd/system/fieldgate.socket$' \
	'-rw-r--r-- .* ./usr/lib/sysusers.d/fieldgate.conf$' \
	'-rw-r--r-- .* ./etc/fieldgate/fieldgate.toml$' \
	' ./usr/share/doc/fieldgate/operations.md$' \
	' ./usr/share/doc/fieldgate/definitions/zigbee/aqara.toml$' \
	' ./usr/share/doc/fieldgate/copyright$'; do
	printf '%s\n' "$contents" | grep -q -- "$want" || fail "package lacks $want"
done
if printf '%s\n' "$contents" | grep -q -e 'master.key' -e 'var/lib/fieldgate'; then
	fail "the package must not ship the master key or the state directory"
fi

# --- 4. install into a throwaway root ----------------------------------------
say "dpkg --root install"
root="$work/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/usr/sbin"
touch "$root/var/lib/dpkg/status"
# Never start services from a package installed into a directory.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
dpkg_root() { dpkg --root="$root" --force-script-chrootless --force-depends "$@"; }
dpkg_root -i "$deb" 2>&1 | grep -v -e 'is not installed' -e 'depends on' -e 'dependency problems'

[ -x "$root/usr/bin/fieldgate" ] || fail "binary not installed"
grep -q '^fieldgate:' "$root/etc/passwd" || fail "sysusers did not create the user fieldgate"
grep -q '^dialout:.*fieldgate' "$root/etc/group" || fail "fieldgate is not in group dialout"
grep -q '^bluetooth:.*fieldgate' "$root/etc/group" || fail "fieldgate is not in group bluetooth"
[ -L "$root/etc/systemd/system/multi-user.target.wants/fieldgate.service" ] || fail "unit not enabled"
[ -L "$root/etc/systemd/system/sockets.target.wants/fieldgate.socket" ] || fail "socket unit not enabled"
key="$root/etc/fieldgate/master.key"
[ -f "$key" ] || fail "postinst did not create the master key"
[ "$(stat -c %a "$key")" = 600 ] || fail "master key mode $(stat -c %a "$key")"
grep -Eqx '[0-9a-f]{64}' "$key" || fail "master key is not 64 hex characters"

say "systemd-analyze verify (installed unit, installed binary)"
# verify resolves ExecStart= and the units it depends on inside --root: give the
# root the host's system units, without touching the installed fieldgate.service.
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
verify_out=$(systemd-analyze verify --root="$root" fieldgate.service fieldgate.socket 2>&1) ||
	fail "systemd-analyze verify: $verify_out"
if printf '%s\n' "$verify_out" | grep -q 'fieldgate'; then fail "systemd-analyze verify: $verify_out"; fi
echo "verify: OK"
exposure2=$(systemd-analyze security --offline=yes --root="$root" fieldgate.service 2>&1 |
	sed -n 's/.*Overall exposure level for fieldgate.service: \([0-9.]*\).*/\1/p')
echo "installed unit overall exposure: ${exposure2:-?}"
[ "$exposure2" = "$exposure" ] || fail "installed unit scores ${exposure2:-nothing}, source unit $exposure"

say "fieldgate --version / config check / doctor in the root"
"$root/usr/bin/fieldgate" --version | tee "$work/version"
grep -qx "fieldgate $version" "$work/version" || fail "--version: $(cat "$work/version")"
"$root/usr/bin/fieldgate" config check --elsewhere "$root/etc/fieldgate/fieldgate.toml" ||
	fail "the packaged config does not pass config check"
# The host has neither the user nor /var/lib/fieldgate, so only some checks can
# pass here; the config and the key the package made must.
doctor_out=$("$root/usr/bin/fieldgate" doctor --config "$root/etc/fieldgate/fieldgate.toml" \
	--master-key "$key" --timeout 2s 2>&1) || true
printf '%s\n' "$doctor_out"
printf '%s\n' "$doctor_out" | grep -q '^  ok    config ' || fail "doctor: config not ok"
printf '%s\n' "$doctor_out" | grep -q '^  ok    master key ' || fail "doctor: master key not ok"
printf '%s\n' "$doctor_out" | grep -q '^  ok    broker .*offline' || fail "doctor: default config is not offline"

# --- 5. upgrade, remove, purge -----------------------------------------------
say "upgrade keeps the edited config, the key and the state"
sed -i 's/^id = "gateway-01"/id = "site-42"/' "$root/etc/fieldgate/fieldgate.toml"
mkdir -p "$root/var/lib/fieldgate"
echo "registry" >"$root/var/lib/fieldgate/fieldgate.db"
key_sum=$(sha256sum <"$key")
cargo deb --profile dev --no-build --no-dbgsym --strip --fast -q --deb-revision 2 -o "$work/v2/" 2>&1 |
	grep -v -e 'dev profile is not supported' -e 'To enable debug symbols' || true
deb2="$work/v2/fieldgate_${version}-2_${arch}.deb"
[ -f "$deb2" ] || fail "expected $deb2"
dpkg_root -i "$deb2" 2>&1 | grep -v -e 'is not installed' -e 'depends on' -e 'dependency problems'
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}\n' fieldgate | grep -qx "${version}-2" ||
	fail "upgrade did not install ${version}-2"
grep -q '^id = "site-42"' "$root/etc/fieldgate/fieldgate.toml" || fail "upgrade lost the edited config"
[ "$(sha256sum <"$key")" = "$key_sum" ] || fail "upgrade changed the master key"
[ -f "$root/var/lib/fieldgate/fieldgate.db" ] || fail "upgrade lost the state directory"
echo "upgrade: OK"

say "remove keeps config, key and state; purge deletes them"
dpkg_root -r fieldgate
[ ! -e "$root/usr/bin/fieldgate" ] || fail "remove left the binary"
[ -f "$root/etc/fieldgate/fieldgate.toml" ] || fail "remove deleted the config"
[ -f "$key" ] || fail "remove deleted the master key"
[ -f "$root/var/lib/fieldgate/fieldgate.db" ] || fail "remove deleted the state"
dpkg_root -P fieldgate
[ ! -e "$root/etc/fieldgate/fieldgate.toml" ] || fail "purge left the config"
[ ! -e "$key" ] || fail "purge left the master key"
[ ! -e "$root/var/lib/fieldgate" ] || fail "purge left the state directory"
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/fieldgate.service" ] || fail "purge left the unit enabled"
echo "remove/purge: OK"

# --- 6. boot it under a real systemd -----------------------------------------
say "boot under systemd-nspawn (Debian 12): install, start, restart, watchdog, upgrade, purge"
bash .ci/boot/run.sh "$deb" "$deb2" || fail "the boot check failed"

say "all packaging checks passed (exposure $exposure)"
