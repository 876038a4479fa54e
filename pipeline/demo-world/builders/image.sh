# The bootable image: real files (not links), so the image's own hash covers what boots.
mkdir -p $out
cp $kernel $out/kernel
cp $initrd $out/initrd
echo "$cmdline" > $out/cmdline
