# services.messages: db-writer (TCP lines -> rows) and db-reader (rows -> HTTP) on a local
# PostgreSQL, reached over its Unix socket with peer authentication: no password exists anywhere.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.messages;
  inherit (lib) mkOption types;

  socketDir = "/run/postgresql";
  # Role and database are both named after the user (ensureDBOwnership requires that). The user is
  # spelled out because peer authentication checks it and older tokio-postgres has no default.
  databaseUrl = "postgresql:///${cfg.user}?host=${socketDir}&user=${cfg.user}";

  # Both services only accept TCP, talk to PostgreSQL's socket and write to the journal.
  hardening = {
    User = cfg.user;
    Group = cfg.user;
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateMounts = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    # A filtered call fails with EPERM instead of killing the service.
    SystemCallErrorNumber = "EPERM";
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    UMask = "0077";
    Restart = "on-failure";
    RestartSec = 2;
  };

  # Ordering after postgresql-setup.service as well: newer nixpkgs moved ensureDatabases/ensureUsers
  # out of postgresql.service's postStart into that unit. Ordering against a unit that does not
  # exist (as at the pinned revision) is a no-op in systemd, so this is right for both.
  dbUnits = [
    "postgresql.service"
    "postgresql-setup.service"
  ];

  service = description: exec: {
    inherit description;
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ] ++ dbUnits;
    # wants, not requires: a PostgreSQL restart must not restart the services (the writer
    # reconnects on its own, and that is what the VM test exercises).
    wants = [ "postgresql.service" ];
    environment.DATABASE_URL = databaseUrl;
    serviceConfig = hardening // {
      ExecStart = exec;
    };
  };
in
{
  options.services.messages = {
    enable = lib.mkEnableOption "the messages services: db-writer (TCP) and db-reader (HTTP) on a local PostgreSQL";

    user = mkOption {
      type = types.str;
      default = "messages";
      description = ''
        System user both services run as. It is created as a system user, and it is also the name
        of the PostgreSQL role and database, authenticated by peer authentication over the Unix
        socket in ${socketDir}.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the writer and reader ports in the firewall.";
    };

    writer = {
      port = mkOption {
        type = types.port;
        default = 1300;
        description = "TCP port db-writer listens on (all IPv4 addresses).";
      };
      package = mkOption {
        type = types.package;
        default = pkgs.db-writer or (pkgs.callPackage ../pkgs/db-writer.nix { });
        defaultText = lib.literalExpression "pkgs.db-writer (from nix/overlay.nix)";
        description = "The db-writer package.";
      };
    };

    reader = {
      port = mkOption {
        type = types.port;
        default = 8000;
        description = "TCP port db-reader serves HTTP on (all IPv4 addresses).";
      };
      package = mkOption {
        type = types.package;
        default = pkgs.db-reader or (pkgs.callPackage ../pkgs/db-reader.nix { });
        defaultText = lib.literalExpression "pkgs.db-reader (from nix/overlay.nix)";
        description = "The db-reader package.";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.writer.port != cfg.reader.port;
        message = "services.messages: writer.port and reader.port must differ (both are ${toString cfg.writer.port})";
      }
      {
        assertion = cfg.user != "root" && cfg.user != "postgres";
        message = "services.messages.user must be a dedicated user, not ${cfg.user}";
      }
    ];

    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.user;
      description = "messages services (db-writer, db-reader)";
    };
    users.groups.${cfg.user} = { };

    services.postgresql = {
      enable = true;
      ensureDatabases = [ cfg.user ];
      ensureUsers = [
        {
          name = cfg.user;
          ensureDBOwnership = true;
        }
      ];
      # Inserted above NixOS's defaults (which already use peer for local connections): stated here
      # so the image does not depend on a default for its only way in.
      authentication = ''
        local ${cfg.user} ${cfg.user} peer
      '';
    };

    systemd.services.messages-writer =
      service "messages: db-writer, one row per line received on TCP port ${toString cfg.writer.port}"
        "${cfg.writer.package}/bin/db-writer ${toString cfg.writer.port}";

    systemd.services.messages-reader =
      service "messages: db-reader, rows newest first over HTTP on port ${toString cfg.reader.port}"
        "${cfg.reader.package}/bin/db_reader ${toString cfg.reader.port}";

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [
      cfg.writer.port
      cfg.reader.port
    ];
  };
}
