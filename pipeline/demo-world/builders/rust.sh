# rustc and cargo from the pinned rustup toolchain, run on the toolchain's loader (their own loader
# path, /lib64/ld-linux-x86-64.so.2, does not exist in the sandbox). rustc finds its sysroot from
# /proc/self/exe, which is the loader when run this way: the wrapper names it.
. $debsLib
mkdir -p $out/bin
wrap_on_loader $out/bin/rustc $toolchain $src/bin/rustc --sysroot $src
wrap_on_loader $out/bin/cargo $toolchain $src/bin/cargo
$out/bin/rustc --version > $out/version
$out/bin/cargo --version >> $out/version
cat $out/version
