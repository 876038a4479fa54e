# Seconds since the epoch -> "YYYYMMDD" (UTC), as nixpkgs' flake derives versionSuffix from
# lastModifiedDate. Plain integer arithmetic (days-from-civil, inverted): Nix has no date builtins.
secs:
let
  inherit (builtins) div;
  pad2 = n: if n < 10 then "0${toString n}" else toString n;
  z = div secs 86400 + 719468;
  era = div z 146097;
  doe = z - era * 146097;
  yoe = div (doe - div doe 1460 + div doe 36524 - div doe 146096) 365;
  doy = doe - (365 * yoe + div yoe 4 - div yoe 100);
  mp = div (5 * doy + 2) 153;
  day = doy - div (153 * mp + 2) 5 + 1;
  month = if mp < 10 then mp + 3 else mp - 9;
  year = yoe + era * 400 + (if month <= 2 then 1 else 0);
in
if secs < 0 then throw "date.nix: negative timestamp ${toString secs}"
else "${toString year}${pad2 month}${pad2 day}"
