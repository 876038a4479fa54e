# Sourced by both images' PID 1 (rootfs/init, rootfs/system-init), installed as /lib/boot.sh: the
# part they share. Everything goes to the console (ttyS0) so a boot log explains a failed probe.
# The caller sets SAY_AS (the prefix of its console lines) first.
say() { echo "$SAY_AS: $*"; }

# /proc, /sys, /dev, then the virtio-net modules in their load order.
boot_mounts_and_modules() {
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
  say "kernel $(uname -r), loading virtio-net modules"
  for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko && say "loaded $m" || say "FAILED to load $m"
  done
}

# lo, then eth0 by DHCP or, without an answer, QEMU user networking's fixed guest address.
boot_network() {
  ip link set lo up
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if [ ! -e /sys/class/net/eth0 ]; then
    say "no eth0 (is there a virtio-net-pci device?)"
    return
  fi
  ip link set eth0 up
  if udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 3 -T 1 >/dev/null 2>&1; then
    say "eth0 configured by DHCP"
  else
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    say "no DHCP answer: eth0 set to 10.0.2.15/24 statically"
  fi
  say "eth0: $(ip -4 -o addr show dev eth0 | awk '{print $4}')"
}

# keep NAME CMD...: restarts a service whenever it exits, so one crash does not end the demo.
keep() {
  name=$1; shift
  while true; do
    say "starting $name: $*"
    "$@"
    say "$name exited ($?), restarting in 1s"
    sleep 1
  done
}

# PID 1 must never exit; it also reaps orphans.
boot_forever() {
  while true; do wait; sleep 1; done
}
