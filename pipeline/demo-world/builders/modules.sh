# The modules the initrd loads, flat, and their load order (dependencies first).
mkdir -p $out
for m in $modules; do
  name=$(basename $m)
  cp $linux/lib/modules/$kernelVersion/$m $out/$name
  echo ${name%.ko} >> $out/load-order
done
