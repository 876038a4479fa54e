# Writes a newc cpio archive by hand so every byte is determined by the file tree alone:
# entries in C-locale sorted order, uid/gid 0, mtime SOURCE_DATE_EPOCH, sequential inode numbers,
# normalised permissions. (busybox cpio -o would record real inode numbers and mtimes.) gzip reading
# stdin writes no name and a zero timestamp.
export LC_ALL=C
cd $rootfs
ino=0
hdr() { # mode nlink size namesize
  ino=$((ino + 1))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    $ino $1 0 0 $2 $SOURCE_DATE_EPOCH $3 0 0 0 0 $4 0
}
pad() { n=$(( (4 - $1 % 4) % 4 )); [ $n -eq 0 ] || head -c $n /dev/zero; }
{
  find . -mindepth 1 | sed 's|^\./||' | sort | while IFS= read -r f; do
    if [ -L "$f" ]; then
      target=$(readlink "$f"); mode=$((0120777)); size=${#target}
    elif [ -d "$f" ]; then
      mode=$((040755)); size=0
    elif [ -x "$f" ]; then
      mode=$((0100755)); size=$(stat -c %s "$f")
    else
      mode=$((0100644)); size=$(stat -c %s "$f")
    fi
    namesize=$(( ${#f} + 1 ))
    nlink=1; [ -d "$f" ] && nlink=2
    hdr $mode $nlink $size $namesize
    printf '%s\000' "$f"
    pad $((110 + namesize))
    if [ -L "$f" ]; then printf '%s' "$target"; elif [ -f "$f" ]; then cat "$f"; fi
    pad $size
  done
  hdr 0 1 0 11
  printf 'TRAILER!!!\000'
  pad $((110 + 11))
} | gzip -9 > $out
