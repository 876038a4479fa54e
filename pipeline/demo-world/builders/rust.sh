# rustc and cargo from the pinned rustup toolchain, run on the toolchain's loader (their own loader
# path, /lib64/ld-linux-x86-64.so.2, does not exist in the sandbox). rustc finds its sysroot from
# /proc/self/exe, which is the loader when run this way: the wrapper names it.
sh=$tools/bin/sh
loader=$toolchain/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
libs=$toolchain/lib/x86_64-linux-gnu:$toolchain/usr/lib/x86_64-linux-gnu
mkdir -p $out/bin
printf '#!%s\nexec %s --library-path %s --argv0 "$0" %s --sysroot %s "$@"\n' "$sh" "$loader" "$libs" "$src/bin/rustc" "$src" > $out/bin/rustc
printf '#!%s\nexec %s --library-path %s --argv0 "$0" %s "$@"\n' "$sh" "$loader" "$libs" "$src/bin/cargo" > $out/bin/cargo
chmod 555 $out/bin/rustc $out/bin/cargo
$out/bin/rustc --version > $out/version
$out/bin/cargo --version >> $out/version
cat $out/version
