#!/usr/bin/env bash
# Stages the offline image's root filesystem: the host-built release binaries, every shared library `ldd` lists
# for them, a passwd entry for the non-root user, and a writable /tmp. The Dockerfile's `offline` target copies it.
#
#   deploy/stage-offline.sh            build the release binaries, then stage them
#   SKIP_BUILD=1 deploy/stage-offline.sh   stage binaries already in target/release
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rootfs="$root/deploy/offline/rootfs"
bins=(broker registry consumer-app)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$root" && cargo build --release --locked -p broker -p registry -p consumer-app)
fi

rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$root/deploy/offline/data"
chmod 1777 "$rootfs/tmp"
touch "$root/deploy/offline/data/.keep"

for bin in "${bins[@]}"; do
  install -m 0755 "$root/target/release/$bin" "$rootfs/usr/local/bin/$bin"
  # The release profile keeps line tables for profiling on the host; the image does not need them.
  if command -v strip >/dev/null; then strip --strip-debug "$rootfs/usr/local/bin/$bin"; fi
done

# Every library the dynamic linker will load, including the loader itself, at the path ldd names.
for bin in "${bins[@]}"; do
  ldd "$rootfs/usr/local/bin/$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/sbin/nologin
relay:x:10001:10001:relay:/data:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
relay:x:10001:
GROUP
echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"

echo "staged $(find "$rootfs" -type f | wc -l) files into $rootfs"
