# Takes the kernel image and the listed modules out of the Debian kernel package.
set -- ./boot/vmlinuz-$kernelVersion
for m in $modules; do set -- "$@" "./lib/modules/$kernelVersion/$m"; done
mkdir -p work && cd work
ar p "$deb" data.tar.xz | unxz | tar -x -f - "$@"
mkdir -p $out/lib/modules/$kernelVersion
mv boot/vmlinuz-$kernelVersion $out/bzImage
mv lib/modules/$kernelVersion/kernel $out/lib/modules/$kernelVersion/
echo $kernelVersion > $out/version
