# Keep the Haskell toolchain (GHC and its bootstrap binaries) out of the image's BUILD closure:
# nothing in the image runs Haskell, but GHC would be the largest single thing to audit and rebuild.
#
# Where it comes from: ShellCheck. nixpkgs' writeShellApplication, and packages such as
# nixos-firewall-tool (always installed with the iptables firewall), lint their scripts at build
# time with `shellcheck-minimal`, a Haskell program. Both decide with
#   lib.meta.availableOn stdenv.buildPlatform shellcheck-minimal.compiler
#   && (builtins.tryEval shellcheck-minimal.compiler.outPath).success
# whether to run it: the switch nixpkgs has for build platforms without GHC. This profile flips that
# switch: the scripts are still syntax-checked (`bash -n`, shellDryRun), only the lint is skipped.
#
# `nix build .#checks.x86_64-linux.no-haskell` (nix/lib/no-haskell-check.nix) walks the ISO's whole
# derivation graph and fails naming any GHC it finds, so a new source of Haskell shows up there.
{ lib, ... }:
{
  nixpkgs.overlays = [
    (_final: prev: {
      shellcheck-minimal = prev.shellcheck-minimal // {
        compiler = {
          meta.platforms = [ ];
          outPath = throw "no-haskell.nix: GHC is kept out of this image";
        };
      };
    })
  ];

  # Runs ShellCheck on every generated unit script; off by default, stated so it stays off.
  systemd.enableStrictShellChecks = lib.mkForce false;
}
