# The hermetic demo world: a bootable kernel+initrd image built WITHOUT nixpkgs.
#
# Mirrors nixpkgs' bootstrap: the only inputs are fixed-output "bootstrap tools" fetched by
# builtin:fetchurl (a static busybox and a Debian kernel package), pinned with their hashes in
# lock.json (written by `supply-chain demo-world`), and one evaluation-time library pinned in
# nix/sources.json. Everything else is built by sandboxed
# derivations whose builder is that busybox, in layers:
#   busybox (FOD) -> tools -> linux (from the kernel .deb FOD) -> modules -> rootfs -> initrd -> image
# Built through default.nix or flake.nix, with the sandbox on (see default.nix).
# demoLib: the evaluation-time library, from nix/sources.json (default.nix) or flake.lock (flake.nix).
{ demoLib }:
let
  lock = builtins.fromJSON (builtins.readFile ./lock.json);
  system = "x86_64-linux";

  # A fixed-output source, fetched exactly as nixpkgs fetches its bootstrap tools.
  fetch = src: derivation {
    inherit (src) name url;
    system = "builtin";
    builder = "builtin:fetchurl";
    outputHashAlgo = src.hash.algo;
    outputHashMode = src.hash.mode;
    outputHash = src.hash.value;
    unpack = src.unpack or false;
    executable = false;
    preferLocalBuild = true;
  };

  # Bootstrap tools: a directory with bin/busybox (argv[0]'s basename must be "busybox").
  busybox = fetch lock.sources.busybox;
  kernelDeb = fetch lock.sources.kernel;
  kernelVersion = lock.kernelVersion;

  # A sandboxed derivation run by `busybox sh -e <script>` with the tools on PATH.
  run = name: script: attrs: derivation ({
    inherit name system;
    builder = "${busybox}/bin/busybox";
    args = [ "sh" "-e" script ];
    PATH = "${tools}/bin";
  } // attrs);

  # Stage 1: every busybox applet as a command, like nixpkgs' unpacked bootstrap-tools.
  tools = derivation {
    name = "demo-tools";
    inherit system busybox;
    builder = "${busybox}/bin/busybox";
    args = [ "sh" "-e" ./builders/tools.sh ];
  };

  # Pinned and imported at evaluation time only, as nixpkgs is.
  moduleList = demoLib.virtioNetModules;

  # Stage 2: the kernel image and the modules we need, taken out of the Debian package.
  linux = run "linux-${kernelVersion}" ./builders/linux.sh {
    deb = kernelDeb;
    inherit kernelVersion;
    modules = moduleList;
  };

  # Stage 3: the modules the initrd loads, flat, plus their load order.
  modules = run "virtio-net-modules-${kernelVersion}" ./builders/modules.sh {
    inherit linux kernelVersion;
    modules = moduleList;
  };

  # Stage 4: the initrd's file tree: init, busybox, modules and the two services.
  rootfs = run "demo-rootfs" ./builders/rootfs.sh {
    inherit tools modules;
    init = ./rootfs/init;
    bootLib = ./rootfs/boot.sh;
    writer = ./rootfs/writer.sh;
    reader = ./rootfs/index.cgi;
    dhcp = ./rootfs/udhcpc.script;
  };

  # Stage 5: a reproducible newc cpio (fixed mtimes, sorted, root-owned, sequential inodes), gzipped
  # without a timestamp.
  initrd = run "demo-initrd.cpio.gz" ./builders/initrd.sh {
    inherit rootfs;
    SOURCE_DATE_EPOCH = "1";
  };

  image = run "demo-image" ./builders/image.sh {
    inherit initrd;
    kernel = "${linux}/bzImage";
    cmdline = demoLib.kernelCmdline;
  };

  # The system image: the real apps on PostgreSQL, built from the Debian toolchain (system.nix).
  systemWorld = import ./system.nix { inherit lock fetch run tools linux modules demoLib; };

  # Deliberately NOT reproducible: the build time and random bytes end up in the output.
  nonReproducible = run "demo-non-reproducible" ./builders/non-reproducible.sh { };
in
{
  inherit image nonReproducible;
  # Exposed so the layers can be built and inspected one by one.
  inherit busybox kernelDeb tools linux modules rootfs initrd;
  inherit (systemWorld) system systemRootfs systemInitrd runtime toolchain rust vendor dbWriter dbReader;
  # Every fixed-output source of the system image, for `demo-world --full` to fetch.
  systemSources = builtins.attrValues systemWorld.debs ++ [ systemWorld.rustSource ] ++ builtins.attrValues systemWorld.crates;
}
