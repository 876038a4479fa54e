#!/bin/sh
# GET / of the reader (port 8000): all rows, newest first, "YYYY-mm-dd HH:MM:SS: content".
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
ls /data/rows | sort -rn | while read -r id; do
  cat /data/rows/$id/line 2>/dev/null
done
