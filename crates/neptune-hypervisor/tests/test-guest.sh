#!/usr/bin/env bash
# Builds the tiny guest of the libvirt adapter's boot test into $1/guest.raw:
# a FAT disk (no partition table) that SYSLINUX boots into a Debian cloud
# kernel and a busybox initramfs whose /init mounts the cidata CD-ROM and
# prints the user-data's final_message on the serial port, as cloud-init
# would. Debian packages: syslinux syslinux-common mtools dosfstools
# busybox-static cpio (and apt-get to fetch the kernel when
# NEPTUNE_TEST_GUEST_KERNEL names no extracted kernel package).
set -euo pipefail
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -s "$out/guest.raw" ] && exit 0
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The kernel: an extracted linux-image-*-cloud-amd64 package (boot/ and
# lib/modules/), named, found where this machine keeps one, or fetched.
k=${NEPTUNE_TEST_GUEST_KERNEL:-/tmp/k/x}
if ! ls "$k"/boot/vmlinuz-* >/dev/null 2>&1; then
  k=$out/kernel
  if ! ls "$k"/boot/vmlinuz-* >/dev/null 2>&1; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    (cd "$work" && apt-get download -qq "$pkg" && dpkg -x ./"$pkg"_*.deb "$k")
  fi
fi
vmlinuz=$(ls "$k"/boot/vmlinuz-* | head -1)
mods=$(ls -d "$k"/lib/modules/*/kernel | head -1)

r=$work/root
mkdir -p "$r"/bin "$r"/proc "$r"/sys "$r"/dev "$r"/seed "$r"/lib/modules
cp /bin/busybox "$r/bin/"
# In the order of their dependencies (modinfo -F depends).
for m in drivers/scsi/scsi_common drivers/scsi/scsi_mod drivers/ata/libata drivers/ata/ata_piix \
         drivers/cdrom/cdrom drivers/scsi/sr_mod fs/isofs/isofs; do
  f=$(ls "$mods/$m".ko* | head -1)
  case $f in
    *.xz) xz -dc "$f" > "$r/lib/modules/$(basename "$m").ko" ;;
    *.zst) zstd -qdc "$f" > "$r/lib/modules/$(basename "$m").ko" ;;
    *) cp "$f" "$r/lib/modules/$(basename "$m").ko" ;;
  esac
done
cat > "$r/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs; do
  insmod /lib/modules/$m.ko
done
for i in $(seq 1 100); do [ -b /dev/sr0 ] && break; sleep 0.1; done
if mount -t iso9660 -o ro /dev/sr0 /seed; then
  echo "test guest: seed $(grep instance-id /seed/meta-data)" > /dev/ttyS0
  sed -n 's/^final_message: *//p' /seed/user-data | tr -d "\"'" > /dev/ttyS0
else
  echo "test guest: no seed" > /dev/ttyS0
fi
while true; do sleep 3600; done
INIT
chmod +x "$r/init"
(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initrd.gz")

cat > "$work/syslinux.cfg" <<'CFG'
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL vmlinuz
  APPEND initrd=initrd.gz console=ttyS0 quiet no_timer_check
CFG
kib=$(( ( $(stat -c %s "$vmlinuz") + $(stat -c %s "$work/initrd.gz") ) / 1024 + 2048 ))
mkfs.vfat -C "$work/guest.raw" "$kib" >/dev/null
syslinux --install "$work/guest.raw"
mcopy -i "$work/guest.raw" "$vmlinuz" ::vmlinuz
mcopy -i "$work/guest.raw" "$work/initrd.gz" ::initrd.gz
mcopy -i "$work/guest.raw" "$work/syslinux.cfg" ::syslinux.cfg
mv "$work/guest.raw" "$out/guest.raw"
