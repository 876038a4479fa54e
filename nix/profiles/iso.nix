# The bootable image: NixOS's minimal installer CD as the base, a serial console, and the
# messages services listening on their guest ports (1300 and 8000, as stacks/ probe them).
{ lib, modulesPath, ... }:
{
  imports = [
    (modulesPath + "/installer/cd-dvd/installation-cd-minimal.nix")
    ../modules/messages.nix
  ];

  # The last console= is /dev/console: kernel, systemd and a getty on the serial port, which is
  # what a headless QEMU (boot-test, -serial file:LOG) reads. tty0 keeps a VGA console too.
  boot.kernelParams = [
    "console=tty0"
    "console=ttyS0,115200"
  ];
  # The installer waits at its boot menu; an appliance image boots straight through.
  boot.loader.timeout = lib.mkForce 1;

  networking.hostName = "messages";

  services.messages = {
    enable = true;
    openFirewall = true;
  };

  # installation-cd-base.nix sets a mkDefault of "18.03", under which services.postgresql has no
  # supported default package. A fresh image starts its state at this release.
  system.stateVersion = "24.11";
}
