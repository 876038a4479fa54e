#!/bin/sh
# One TCP connection of the writer (port 1300): each newline-terminated line becomes a row,
# answered "OK <id>". Rows are /data/rows/<id>, ids allocated with mkdir (atomic).
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  id=$(( $(ls /data/rows | wc -l) + 1 ))
  while ! mkdir /data/rows/$id 2>/dev/null; do id=$((id + 1)); done
  printf '%s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$line" > /data/rows/$id/.line
  mv /data/rows/$id/.line /data/rows/$id/line
  echo "OK $id"
  echo "demo-writer: row $id (${#line} bytes)" >&2
done
