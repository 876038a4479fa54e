# db-writer (apps/db-writer, C++20, Boost.Asio, libpq) compiled with the pinned toolchain: the
# translation units CMakeLists.txt lists (scripts/check: same list), the flags of its Release build.
# Reproducible: no build paths (-ffile-prefix-map), no dates, a build ID from the content.
cp -r $src/src src
chmod -R u+w src
cd src
for unit in main session db_pool log; do
  $toolchain/bin/c++ -std=c++20 -O3 -DNDEBUG -DBOOST_ASIO_NO_DEPRECATED -Wall -Wextra \
    -ffile-prefix-map=$PWD=/db-writer -isystem $toolchain/usr/include/postgresql \
    -c $unit.cpp -o $unit.o
done
mkdir -p $out/bin
$toolchain/bin/c++ -O3 -pthread main.o session.o db_pool.o log.o -lpq -s -o $out/bin/db-writer
$out/bin/db-writer --help > /dev/null
