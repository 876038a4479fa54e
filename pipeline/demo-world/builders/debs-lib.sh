# Sourced by the system layers: unpack_debs DEST DEB... unpacks Debian packages (data.tar.xz) into
# DEST as dpkg would, then points their absolute symlinks (into the host's root) into DEST.
unpack_debs() {
  dest=$1; shift
  mkdir -p "$dest"
  for deb in "$@"; do
    member=$(ar t "$deb" | grep '^data\.tar')
    case "$member" in
      data.tar.xz) ar p "$deb" "$member" | unxz | tar -x -f - -C "$dest" ;;
      data.tar.gz) ar p "$deb" "$member" | gunzip | tar -x -f - -C "$dest" ;;
      *) echo "unpack_debs: $deb has $member, which busybox cannot unpack" >&2; exit 1 ;;
    esac
  done
  find "$dest" -type l | while IFS= read -r link; do
    target=$(readlink "$link")
    case "$target" in /*) ln -sfn "$dest$target" "$link" ;; esac
  done
  rm -rf "$dest/usr/share/doc" "$dest/usr/share/man" "$dest/usr/share/info" "$dest/usr/share/lintian" "$dest/usr/share/locale" "$dest/usr/share/bug"
}

# wrap_on_loader WRAPPER TREE PROGRAM [ARG...]: Debian's binaries ask for /lib64/ld-linux-x86-64.so.2,
# which no sandbox has. WRAPPER runs PROGRAM (ARGs first) on TREE's own loader and libraries;
# --argv0 keeps programs that find their files from argv[0] (gcc) working.
wrap_on_loader() {
  wrapper=$1 tree=$2 program=$3
  shift 3
  printf '#!%s\nexec %s --library-path %s --argv0 "$0" %s "$@"\n' "$tools/bin/sh" \
    "$tree/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$tree/lib/x86_64-linux-gnu:$tree/usr/lib/x86_64-linux-gnu" \
    "$program${*:+ $*}" > "$wrapper"
  chmod 555 "$wrapper"
}
