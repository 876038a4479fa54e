# NixOS VM test of services.messages end to end, from a second machine through the firewall:
# lines over TCP are acknowledged, read back newest first over HTTP, and are the rows in PostgreSQL.
#   nix build .#checks.x86_64-linux.integration-test
# `pkgs` must carry nix/overlay.nix (outputs.nix passes it so): runNixOSTest gives the nodes this
# very package set, and the module's defaults pick pkgs.db-writer and pkgs.db-reader from it.
{ pkgs }:

pkgs.testers.runNixOSTest {
  name = "messages-integration";

  nodes = {
    server =
      { pkgs, ... }:
      {
        imports = [ ../modules/messages.nix ];
        services.messages = {
          enable = true;
          openFirewall = true;
        };
        environment.systemPackages = [
          pkgs.socat
          pkgs.curl
        ];
      };

    client =
      { pkgs, ... }:
      {
        environment.systemPackages = [
          pkgs.socat
          pkgs.curl
        ];
      };
  };

  testScript = ''
    import re
    import shlex

    STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}: "


    def send(machine, host, lines):
        """Sends lines to the writer; returns the ids from its OK acknowledgements."""
        payload = "".join(line + "\n" for line in lines)
        # -t 5: after our EOF keep reading the acknowledgements for up to 5 s
        out = machine.succeed(
            f"printf %s {shlex.quote(payload)} | socat -t 5 - TCP4:{host}:1300"
        )
        acks = out.splitlines()
        assert len(acks) == len(lines), f"{len(lines)} lines sent, acknowledgements: {acks!r}"
        for ack in acks:
            assert re.fullmatch(r"OK \d+", ack), f"not an OK acknowledgement: {ack!r}"
        return [int(ack.split()[1]) for ack in acks]


    start_all()
    server.wait_for_unit("postgresql.service")
    server.wait_for_unit("messages-writer.service")
    server.wait_for_unit("messages-reader.service")
    server.wait_for_open_port(1300)
    server.wait_for_open_port(8000)
    client.wait_for_unit("multi-user.target")

    with subtest("lines sent from another machine are acknowledged (ports open in the firewall)"):
        ids = send(client, "server", ["first line", "second line"])
        ids += send(server, "127.0.0.1", ["'); DROP TABLE testcounter;--"])
        assert ids == sorted(ids), f"ids not increasing: {ids}"

    with subtest("the reader returns them newest first, one dated line each"):
        body = client.succeed("curl -4 -sSf http://server:8000/")
        lines = body.splitlines()
        expected = ["'); DROP TABLE testcounter;--", "second line", "first line"]
        assert len(lines) == len(expected), f"expected {len(expected)} lines, got {body!r}"
        for line, content in zip(lines, expected):
            assert re.fullmatch(STAMP + re.escape(content), line), f"{line!r} is not {content!r}"
        client.succeed("curl -4 -sSf http://server:8000/healthz")

    with subtest("the rows in PostgreSQL are exactly what was acknowledged"):
        rows = server.succeed(
            "runuser -u postgres -- psql -X -d messages -tA -F '|' "
            + "-c 'SELECT id, content FROM testcounter ORDER BY id'"
        ).splitlines()
        assert rows == [f"{i}|{c}" for i, c in zip(ids, reversed(expected))], f"rows: {rows!r}"

    with subtest("the database role is reachable only as its own system user (peer auth)"):
        server.fail("psql -X 'postgresql:///messages?host=/run/postgresql&user=messages' -c 'SELECT 1'")
        server.succeed(
            "runuser -u messages -- psql -X 'postgresql:///messages?host=/run/postgresql' -c 'SELECT 1'"
        )

    with subtest("the services run hardened, as the messages user"):
        for unit in ["messages-writer", "messages-reader"]:
            props = server.succeed(
                f"systemctl show -p User -p ProtectSystem -p NoNewPrivileges {unit}.service"
            )
            for want in ["User=messages", "ProtectSystem=strict", "NoNewPrivileges=yes"]:
                assert want in props, f"{unit}: {want} missing from {props!r}"

    with subtest("the writer keeps serving after PostgreSQL restarts"):
        # The same writer process must reconnect: a restarted unit would prove nothing.
        writer_pid = server.succeed("systemctl show -p MainPID --value messages-writer.service").strip()
        server.systemctl("restart postgresql.service")
        server.wait_for_unit("postgresql.service")
        server.wait_until_succeeds(
            "printf 'after restart\\n' | socat -t 5 - TCP4:127.0.0.1:1300 | grep -q '^OK '"
        )
        first = client.succeed("curl -4 -sSf http://server:8000/").splitlines()[0]
        assert re.fullmatch(STAMP + "after restart", first), f"newest line is {first!r}"
        pid_after = server.succeed("systemctl show -p MainPID --value messages-writer.service").strip()
        assert pid_after == writer_pid, f"the writer was restarted ({writer_pid} -> {pid_after})"
  '';
}
