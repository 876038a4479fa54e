# Smaller image and a smaller source closure to audit: what an appliance that only runs
# services.messages does not need. The installer modules set several of these with
# mkImageMediaOverride or plain priority, hence mkForce.
{ lib, ... }:
{
  # No manuals: man pages, info, /share/doc, and the NixOS manual (installation-device.nix forces
  # documentation.enable and documentation.nixos.enable on with mkImageMediaOverride).
  documentation = {
    enable = lib.mkForce false;
    nixos.enable = lib.mkForce false;
    man.enable = lib.mkForce false;
    info.enable = lib.mkForce false;
    doc.enable = lib.mkForce false;
  };

  # Two locales instead of glibc's full locale archive.
  i18n.supportedLocales = [
    "C.UTF-8/UTF-8"
    "en_US.UTF-8/UTF-8"
  ];

  # A VM appliance needs no device firmware (all-hardware.nix turns on the redistributable set).
  hardware.enableRedistributableFirmware = lib.mkForce false;
  hardware.firmware = lib.mkForce [ ];
  networking.wireless.enable = lib.mkForce false;

  # The installer's extras: its copy of the nixpkgs sources, a full stdenv for offline installs,
  # memtest, ZFS (an out-of-tree kernel module), software RAID, containers and the install tools.
  system.installer.channel.enable = false;
  system.extraDependencies = lib.mkForce [ ];
  boot.loader.grub.memtest86.enable = lib.mkForce false;
  boot.supportedFilesystems.zfs = lib.mkForce false;
  boot.swraid.enable = lib.mkForce false;
  boot.enableContainers = false;
  system.disableInstallerTools = true;

  # Default packages (perl, rsync, strace) and desktop-ish services nothing here uses.
  environment.defaultPackages = lib.mkForce [ ];
  programs.command-not-found.enable = lib.mkForce false;
  services.udisks2.enable = lib.mkForce false;
  security.polkit.enable = lib.mkForce false;
  fonts.fontconfig.enable = lib.mkForce false;
  xdg = {
    autostart.enable = false;
    icons.enable = false;
    mime.enable = false;
    sounds.enable = false;
  };
}
