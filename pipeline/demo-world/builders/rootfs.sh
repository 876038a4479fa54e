# The initrd's file tree. No store paths inside: the initrd must stand alone.
mkdir -p $out/bin $out/lib/modules $out/etc $out/srv $out/www/cgi-bin
cp $tools/bin/busybox $out/bin/busybox
cp $modules/*.ko $modules/load-order $out/lib/modules/
cp $init $out/init
cp $bootLib $out/lib/boot.sh
cp $writer $out/srv/writer.sh
cp $reader $out/www/cgi-bin/index.cgi
cp $dhcp $out/etc/udhcpc.script
echo ok > $out/www/healthz
chmod 555 $out/init $out/srv/writer.sh $out/www/cgi-bin/index.cgi $out/etc/udhcpc.script $out/bin/busybox
