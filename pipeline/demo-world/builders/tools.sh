# Unpacks the bootstrap busybox into a tools directory: bin/busybox plus one symlink per applet.
bb=$busybox/bin/busybox
$bb mkdir -p $out/bin
$bb cp $bb $out/bin/busybox
$bb chmod 555 $out/bin/busybox
for applet in $($bb --list); do
  [ "$applet" = busybox ] || $bb ln -s busybox "$out/bin/$applet"
done
# Fail here, not three stages later, if the busybox cannot run what the world needs.
for applet in sh ar unxz tar cpio gzip stat find sort insmod nc httpd udhcpc; do
  [ -e "$out/bin/$applet" ] || { echo "busybox lacks the applet $applet" >&2; exit 1; }
done
