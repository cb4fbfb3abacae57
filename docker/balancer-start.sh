#!/bin/sh
# The apache-balancer image's start: one BalancerMember per container of the backend service
# (docker's DNS answers the service's name with every container's address), written into the
# balancer vhost, then Apache exec'd as PID 1. After `docker-compose up --scale backend=N`,
# restart this service so it sees the new members.
set -eu
conf="${BALANCER_CONF:-/etc/apache2/sites-available/fcgi_backend_balancer.conf}"
service="${BACKEND_SERVICE:-backend}"
port="${BACKEND_PORT:-9000}"
tries=0
until members=$(getent ahostsv4 "$service" | awk '{print $1}' | sort -u) && [ -n "$members" ]; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
        echo "balancer-start: no address for the service '$service' after 30 s" >&2
        exit 1
    fi
    sleep 1
done
echo "balancer-start: members of $service:" $members >&2
awk -v members="$members" -v port="$port" '
    /BalancerMember/ {
        if (!written) {
            template = $0
            sub(/ status=\+H/, "", template)
            count = split(members, address, "\n")
            for (i = 1; i <= count; i++) {
                line = template
                sub(/fcgi:\/\/[^"]*/, "fcgi://" address[i] ":" port, line)
                print line
            }
            written = 1
        }
        next
    }
    { print }' "$conf" > "$conf.new"
mv "$conf.new" "$conf"
set +u  # (Debian's envvars reads variables that may be unset)
. "${APACHE_ENVVARS:-/etc/apache2/envvars}"
mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR"
exec "${APACHE_BIN:-/usr/sbin/apache2}" -D FOREGROUND
