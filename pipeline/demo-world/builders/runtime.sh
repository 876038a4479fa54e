# The guest's shared libraries and PostgreSQL: the runtime packages, unpacked, minus what only
# compiles against them or what the image never loads (PostgreSQL's JIT needs LLVM, not shipped).
. $debsLib
unpack_debs $out $debs
rm -rf $out/usr/lib/postgresql/15/lib/bitcode $out/usr/lib/postgresql/15/lib/llvmjit*.so $out/etc $out/usr/share/postgresql-common
find $out -name '*.a' -exec rm -f {} +
