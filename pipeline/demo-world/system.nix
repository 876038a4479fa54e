# The demo world's system image: the real db-writer (C++) and db-reader (Rust) compiled in the Nix
# sandbox from apps/, on PostgreSQL, with no nixpkgs (docs/demo-world.md, "The system image").
#
# The bootstrap chain, like nixpkgs' stdenv stages:
#   Debian packages (FODs, lock.system.debs) ──► runtime   (C library, shared libraries, PostgreSQL)
#                                           └──► toolchain (gcc/g++, binutils, headers; runs on its own
#                                                           C library through wrappers, links against runtime)
#   rustup's toolchain (FOD NAR, lock.system.rust) ──► rust (rustc, cargo on the toolchain's C library)
#   crates (FODs, hashes from apps/db-reader/Cargo.lock) ──► vendor
#   apps/db-writer + toolchain ──► dbWriter      apps/db-reader + rust + vendor ──► dbReader
#   busybox + modules + runtime + dbWriter + dbReader ──► systemRootfs ──► systemInitrd ──► system
{ lock, fetch, run, tools, linux, modules, demoLib }:
let
  sys = lock.system or (throw "lock.json pins no system toolchain: run `supply-chain demo-world --full` on this directory");
  storeName = builtins.replaceStrings [ "~" ":" ] [ "_" "_" ];

  debs = builtins.mapAttrs (_: fetch) sys.debs;
  debsOf = role: map (p: debs.${p}) (builtins.filter (p: sys.debs.${p}.role == role) (builtins.attrNames sys.debs));
  debsLib = ./builders/debs-lib.sh;

  # Stage 1: the guest's shared libraries and PostgreSQL, unpacked; what the apps are linked to run on.
  runtime = run "system-runtime" ./builders/runtime.sh {
    inherit debsLib;
    debs = debsOf "runtime";
  };

  # Stage 2: the compilers, unpacked over the same runtime packages, each binary wrapped to run on
  # this tree's own loader; bin/cc and bin/c++ compile against this tree and link for `runtime`.
  toolchain = run "system-toolchain" ./builders/toolchain.sh {
    inherit debsLib runtime tools;
    debs = debsOf "runtime" ++ debsOf "toolchain";
  };

  # Stage 2': rustc and cargo (only what a build needs, packed by demo-world) on the toolchain's loader.
  rustSource = fetch sys.rust;
  rust = run "system-rust" ./builders/rust.sh {
    inherit debsLib toolchain tools;
    src = rustSource;
  };

  # Every registry crate of Cargo.lock as its own fixed-output source, checked against the lock's
  # SHA-256 (nixpkgs' importCargoLock does the same).
  cargoLock = builtins.fromTOML (builtins.readFile ./apps/db-reader/Cargo.lock);
  registryCrates = builtins.filter (p: (p.source or "") == "registry+https://github.com/rust-lang/crates.io-index") cargoLock.package;
  crates = builtins.listToAttrs (map (p: {
    name = "${p.name}-${p.version}";
    value = fetch {
      name = storeName "${p.name}-${p.version}.crate";
      url = "${sys.crates.url}${p.name}-${p.version}.crate";
      hash = { algo = "sha256"; mode = "flat"; value = p.checksum; };
    };
  }) registryCrates);
  vendor = run "db-reader-vendor" ./builders/vendor.sh {
    crates = map (p: "${crates."${p.name}-${p.version}"} ${p.name}-${p.version} ${p.checksum}") registryCrates;
  };

  # Stage 3: the applications, from the same sources the host tests build.
  dbWriter = run "db-writer" ./builders/db-writer.sh {
    inherit toolchain;
    src = ./apps/db-writer;
    SOURCE_DATE_EPOCH = "1";
  };
  dbReader = run "db-reader" ./builders/db-reader.sh {
    inherit toolchain rust vendor;
    src = ./apps/db-reader;
    SOURCE_DATE_EPOCH = "1";
  };

  # Stage 4: the guest: busybox, the virtio modules, runtime as an FHS root, the two apps.
  systemRootfs = run "system-rootfs" ./builders/system-rootfs.sh {
    inherit tools modules runtime dbWriter dbReader;
    init = ./rootfs/system-init;
    bootLib = ./rootfs/boot.sh;
    dhcp = ./rootfs/udhcpc.script;
  };
  systemInitrd = run "system-initrd.cpio.gz" ./builders/initrd.sh {
    rootfs = systemRootfs;
    SOURCE_DATE_EPOCH = "1";
  };
  system = run "system-image" ./builders/image.sh {
    initrd = systemInitrd;
    kernel = "${linux}/bzImage";
    cmdline = demoLib.kernelCmdline;
  };
in
{
  inherit system systemRootfs systemInitrd runtime toolchain rust rustSource vendor dbWriter dbReader debs crates;
}
