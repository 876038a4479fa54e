# The system image's file tree: busybox, the virtio modules, the runtime packages as an FHS root
# (Debian's postgres asks for /lib64/ld-linux-x86-64.so.2 and its libraries where Debian puts them),
# and the two apps. The apps were linked for the runtime's store path: that path is a link to / here,
# so the same files serve both.
mkdir -p $out/bin $out/lib/modules $out/etc $out/usr/bin $out/nix/store
cp -dR $runtime/. $out/
chmod -R u+w $out
rm -rf $out/bin $out/sbin && mkdir -p $out/bin
cp $tools/bin/busybox $out/bin/busybox
mkdir -p $out/lib/modules
cp $modules/*.ko $modules/load-order $out/lib/modules/
# Absolute links the runtime's unpacking pointed at its own store path: make them relative to /.
find $out -type l | while IFS= read -r link; do
  target=$(readlink "$link")
  case "$target" in $runtime/*) ln -sfn "${target#$runtime}" "$link" ;; esac
done
ln -s / $out$runtime
cp $dbWriter/bin/db-writer $out/usr/bin/db-writer
cp $dbReader/bin/db_reader $out/usr/bin/db_reader
cp $init $out/init
cp $bootLib $out/lib/boot.sh
cp $dhcp $out/etc/udhcpc.script
cat > $out/etc/passwd <<PASSWD
root:x:0:0:root:/root:/bin/sh
postgres:x:70:70:PostgreSQL:/var/lib/postgresql:/bin/sh
messages:x:71:71:messages services:/var/empty:/bin/sh
PASSWD
cat > $out/etc/group <<GROUP
root:x:0:
postgres:x:70:
messages:x:71:
GROUP
chmod 555 $out/init $out/etc/udhcpc.script $out/bin/busybox $out/usr/bin/db-writer $out/usr/bin/db_reader
