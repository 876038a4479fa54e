# Differs on every build, so verification can be shown to fail when it should.
mkdir -p $out
date '+built at %Y-%m-%d %H:%M:%S' > $out/build-info
od -A n -t x1 -N 16 /dev/urandom >> $out/build-info
