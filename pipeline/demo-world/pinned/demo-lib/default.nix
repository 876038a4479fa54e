# demo-lib: a library the demo world pins and imports at EVALUATION time only (as a real world pins
# nixpkgs): `supply-chain demo-world` packs this directory as bootstrap/demo-lib.tar.gz and pins its
# hash in nix/sources.json. No derivation references it, so only the pins put it into a closure.
{
  # virtio-net for QEMU, in load order.
  virtioNetModules = [
    "kernel/drivers/virtio/virtio_ring.ko"
    "kernel/drivers/virtio/virtio.ko"
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko"
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko"
    "kernel/drivers/virtio/virtio_pci.ko"
    "kernel/net/core/failover.ko"
    "kernel/drivers/net/net_failover.ko"
    "kernel/drivers/net/virtio_net.ko"
  ];
  kernelCmdline = "loglevel=4 panic=-1";
}
