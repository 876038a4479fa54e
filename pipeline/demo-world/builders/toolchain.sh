# The compilers, runnable in the sandbox: each binary is moved aside and replaced by a script that
# runs it on this tree's own loader and libraries (wrap_on_loader). bin/cc and bin/c++ compile against
# this tree (--sysroot) and link for `runtime` (its loader, its libraries as the rpath), the way
# nixpkgs' cc-wrapper links for its glibc (DT_RPATH, not RUNPATH: libstdc++ finds libm through it too).
. $debsLib
unpack_debs $out $debs
sh=$tools/bin/sh
for f in $out/usr/bin/* $out/usr/lib/gcc/x86_64-linux-gnu/12/*; do
  [ -f "$f" ] && [ ! -L "$f" ] && [ -x "$f" ] || continue
  case "$f" in *.so | *.so.*) continue ;; esac
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
  real=$(dirname "$f")/.$(basename "$f").real
  mv "$f" "$real"
  wrap_on_loader "$f" $out "$real"
done
mkdir -p $out/bin
ln -s ../usr/bin/x86_64-linux-gnu-as $out/bin/as
ln -s ../usr/bin/x86_64-linux-gnu-ld.bfd $out/bin/ld
rt=$runtime/lib/x86_64-linux-gnu:$runtime/usr/lib/x86_64-linux-gnu
for pair in "cc x86_64-linux-gnu-gcc-12" "c++ x86_64-linux-gnu-g++-12"; do
  set -- $pair
  printf '#!%s\nexec %s --sysroot=%s -B%s/bin/ -Wl,--dynamic-linker=%s -Wl,--disable-new-dtags -Wl,-rpath,%s "$@"\n' \
    "$sh" "$out/usr/bin/$2" "$out" "$out" "$runtime/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$rt" > $out/bin/$1
  chmod 555 $out/bin/$1
done
# Fail here, naming the stage, if the wrapped compiler cannot build and run a program.
cd "$TMPDIR"
printf '#include <string>\n#include <cstdio>\nint main() { std::string s = "ok"; std::puts(s.c_str()); }\n' > probe.cpp
$out/bin/c++ -std=c++20 -O2 probe.cpp -o probe
[ "$(./probe)" = ok ] || { echo "toolchain: a probe program built with bin/c++ did not run" >&2; exit 1; }
